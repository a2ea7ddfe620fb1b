//! Operator errors.

/// Errors building, loading or applying operators.
#[derive(Debug, thiserror::Error)]
pub enum OperatorError {
    /// A parameter was out of range.
    #[error("invalid {name} = {value}: {reason}")]
    Invalid {
        /// Parameter name.
        name: &'static str,
        /// Offending value.
        value: String,
        /// Valid range.
        reason: String,
    },
    /// A file could not be read, parsed or written.
    #[error("{0}")]
    Io(String),
    /// An image-loading failure.
    #[error(transparent)]
    Image(#[from] tweedie_io::IoError),
}

impl OperatorError {
    /// Shorthand for [`OperatorError::Invalid`].
    pub fn invalid(name: &'static str, value: impl ToString, reason: impl Into<String>) -> Self {
        OperatorError::Invalid {
            name,
            value: value.to_string(),
            reason: reason.into(),
        }
    }
}
