//! Identifier helpers: constructors for the Mesos id messages and the checks
//! Mesos applies to ids chosen by schedulers and executors (`validateID`).

use crate::v1;

/// Why an externally chosen id is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IdError {
    /// The id is empty.
    #[error("id must not be empty")]
    Empty,
    /// The id is longer than 255 bytes.
    #[error("id {0:?} is longer than 255 characters")]
    TooLong(String),
    /// The id is `.` or `..`.
    #[error("id {0:?} must not be '.' or '..'")]
    Dots(String),
    /// The id has a control character, `/` or `\`.
    #[error("id {0:?} contains a control character, '/' or '\\'")]
    BadCharacter(String),
}

/// Checks an id as Mesos' `validateID` does: non-empty, at most 255 bytes, not
/// `.` or `..`, no control characters, `/` or `\`.
pub fn validate(id: &str) -> Result<(), IdError> {
    if id.is_empty() {
        return Err(IdError::Empty);
    }
    if id.len() > 255 {
        return Err(IdError::TooLong(id.chars().take(40).collect()));
    }
    if id == "." || id == ".." {
        return Err(IdError::Dots(id.to_string()));
    }
    if id.chars().any(|c| c.is_control() || c == '/' || c == '\\') {
        return Err(IdError::BadCharacter(id.to_string()));
    }
    Ok(())
}

/// `FrameworkID{value}`.
pub fn framework(value: impl Into<String>) -> v1::FrameworkId {
    v1::FrameworkId {
        value: value.into(),
    }
}

/// `AgentID{value}`.
pub fn agent(value: impl Into<String>) -> v1::AgentId {
    v1::AgentId {
        value: value.into(),
    }
}

/// `TaskID{value}`.
pub fn task(value: impl Into<String>) -> v1::TaskId {
    v1::TaskId {
        value: value.into(),
    }
}

/// `OfferID{value}`.
pub fn offer(value: impl Into<String>) -> v1::OfferId {
    v1::OfferId {
        value: value.into(),
    }
}

/// `ExecutorID{value}`.
pub fn executor(value: impl Into<String>) -> v1::ExecutorId {
    v1::ExecutorId {
        value: value.into(),
    }
}

/// `ContainerID{value}`.
pub fn container(value: impl Into<String>) -> v1::ContainerId {
    v1::ContainerId {
        value: value.into(),
        parent: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validate_follows_mesos() {
        assert_eq!(validate("task-1.a_b"), Ok(()));
        assert_eq!(validate(""), Err(IdError::Empty));
        assert!(matches!(validate(".."), Err(IdError::Dots(_))));
        assert!(matches!(validate("a/b"), Err(IdError::BadCharacter(_))));
        assert!(matches!(validate("a\nb"), Err(IdError::BadCharacter(_))));
        assert!(matches!(
            validate(&"x".repeat(256)),
            Err(IdError::TooLong(_))
        ));
    }
}
