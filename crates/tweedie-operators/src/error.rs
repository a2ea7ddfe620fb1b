//! Operator errors.

use tweedie_core::InvalidParameter;

/// A boxed underlying error, kept as the `source()` of an [`OperatorError`].
pub type BoxedSource = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Errors building, loading or applying operators.
#[derive(Debug, thiserror::Error)]
pub enum OperatorError {
    /// A parameter was out of range.
    #[error(transparent)]
    Invalid(#[from] InvalidParameter),
    /// A file could not be read, parsed or written: what and where, with the underlying error
    /// (I/O, JSON, safetensors, image codec) as its source when there is one.
    #[error("{context}")]
    File {
        /// The file and what went wrong.
        context: String,
        /// The underlying error.
        #[source]
        source: Option<BoxedSource>,
    },
    /// An image-loading failure.
    #[error(transparent)]
    Image(#[from] tweedie_io::IoError),
}

impl OperatorError {
    /// Shorthand for [`OperatorError::Invalid`].
    pub fn invalid(name: &'static str, value: impl ToString, reason: impl Into<String>) -> Self {
        InvalidParameter::new(name, value, reason).into()
    }

    /// A file error without an underlying error (its content is not what is needed).
    pub fn file(context: impl Into<String>) -> Self {
        OperatorError::File {
            context: context.into(),
            source: None,
        }
    }

    /// A file error caused by `source`.
    pub fn file_from(
        context: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        OperatorError::File {
            context: context.into(),
            source: Some(Box::new(source)),
        }
    }
}
