//! Errors of the core crate, and the one invalid-parameter error every crate wraps.

/// A parameter outside its valid range: the one type every crate of the workspace uses for
/// this, wrapped by each crate's error with `#[from]`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {name} = {value}: {reason}")]
pub struct InvalidParameter {
    /// Parameter name as the user wrote it.
    pub name: &'static str,
    /// The offending value, formatted.
    pub value: String,
    /// What the valid range is.
    pub reason: String,
}

impl InvalidParameter {
    /// `name = value` is invalid because of `reason` (e.g. "must lie in [0, 1]").
    pub fn new(name: &'static str, value: impl ToString, reason: impl Into<String>) -> Self {
        Self {
            name,
            value: value.to_string(),
            reason: reason.into(),
        }
    }
}

/// Errors raised by schedule construction and core math.
#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    /// A parameter was outside its valid range.
    #[error(transparent)]
    InvalidParameter(#[from] InvalidParameter),
    /// Tensor shapes did not agree.
    #[error("shape mismatch: {0}")]
    Shape(String),
}

impl CoreError {
    /// Shorthand for [`CoreError::InvalidParameter`].
    pub fn invalid(name: &'static str, value: impl ToString, reason: impl Into<String>) -> Self {
        InvalidParameter::new(name, value, reason).into()
    }
}
