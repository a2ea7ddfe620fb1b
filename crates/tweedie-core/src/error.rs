//! Errors of the core crate.

/// Errors raised by schedule construction and core math.
#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    /// A parameter was outside its valid range.
    #[error("invalid parameter {name} = {value}: {reason}")]
    InvalidParameter {
        /// Parameter name as the user wrote it.
        name: &'static str,
        /// The offending value, formatted.
        value: String,
        /// What the valid range is.
        reason: String,
    },
    /// Tensor shapes did not agree.
    #[error("shape mismatch: {0}")]
    Shape(String),
}

impl CoreError {
    /// Shorthand for [`CoreError::InvalidParameter`].
    pub fn invalid(name: &'static str, value: impl ToString, reason: impl Into<String>) -> Self {
        CoreError::InvalidParameter {
            name,
            value: value.to_string(),
            reason: reason.into(),
        }
    }
}
