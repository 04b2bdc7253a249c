//! App and group ids: absolute, `/`-separated paths whose segments are
//! lowercase letters, digits, hyphens and inner dots (Marathon's rule).

use std::fmt;

/// Why a path is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("path '{path}' is invalid: {reason}")]
pub struct PathError {
    /// The path given.
    pub path: String,
    /// What is wrong.
    pub reason: String,
}

/// A canonical absolute path (`/group/app`); the root is `/`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct PathId(Vec<String>);

fn valid_segment(s: &str) -> bool {
    // ^(([a-z0-9]|[a-z0-9][a-z0-9\-]*[a-z0-9])\.)*([a-z0-9]|[a-z0-9][a-z0-9\-]*[a-z0-9])$
    !s.is_empty()
        && s.split('.').all(|label| {
            !label.is_empty()
                && label
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

impl PathId {
    /// The root group.
    pub fn root() -> Self {
        PathId(Vec::new())
    }

    /// Parses an id, relative ids being relative to `base` (the root for
    /// API calls); `.` and `..` are resolved; `//` is tolerated.
    pub fn parse_relative(s: &str, base: &PathId) -> Result<Self, PathError> {
        let err = |reason: &str| PathError {
            path: s.to_string(),
            reason: reason.to_string(),
        };
        let mut parts: Vec<String> = if s.starts_with('/') {
            Vec::new()
        } else {
            base.0.clone()
        };
        for seg in s.split('/').filter(|p| !p.is_empty()) {
            match seg {
                "." => {}
                ".." => {
                    if parts.pop().is_none() {
                        return Err(err("'..' goes above the root"));
                    }
                }
                seg if valid_segment(seg) => parts.push(seg.to_string()),
                _ => {
                    return Err(err(
                        "segments must be lowercase letters, digits and hyphens, separated by dots; \
                         not starting or ending with a hyphen",
                    ));
                }
            }
        }
        Ok(PathId(parts))
    }

    /// Parses an id relative to the root.
    pub fn parse(s: &str) -> Result<Self, PathError> {
        Self::parse_relative(s, &PathId::root())
    }

    /// Whether this is the root.
    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }

    /// The parent group (the root's parent is the root).
    pub fn parent(&self) -> PathId {
        let mut p = self.0.clone();
        p.pop();
        PathId(p)
    }

    /// Whether `self` is `other` or inside it.
    pub fn starts_with(&self, other: &PathId) -> bool {
        self.0.len() >= other.0.len() && self.0[..other.0.len()] == other.0[..]
    }

    /// Segments.
    pub fn segments(&self) -> &[String] {
        &self.0
    }

    /// The last segment (the app's own name).
    pub fn name(&self) -> &str {
        self.0.last().map(String::as_str).unwrap_or("")
    }

    /// `group_app`: the form used in task ids.
    pub fn safe(&self) -> String {
        self.0.join("_")
    }

    /// `app.group`: the Mesos task name (Mesos-DNS keys on it).
    pub fn reversed_dotted(&self) -> String {
        self.0.iter().rev().cloned().collect::<Vec<_>>().join(".")
    }

    /// A child path.
    pub fn child(&self, name: &str) -> PathId {
        let mut p = self.0.clone();
        p.push(name.to_string());
        PathId(p)
    }
}

impl fmt::Display for PathId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "/{}", self.0.join("/"))
    }
}

impl serde::Serialize for PathId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> serde::Deserialize<'de> for PathId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        PathId::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_forms() {
        assert_eq!(PathId::parse("test-app").unwrap().to_string(), "/test-app");
        assert_eq!(
            PathId::parse("//group//app").unwrap().to_string(),
            "/group/app"
        );
        assert_eq!(
            PathId::parse("/a/b/../c/./d").unwrap().to_string(),
            "/a/c/d"
        );
        assert_eq!(PathId::parse("/").unwrap(), PathId::root());
        assert_eq!(PathId::parse("/my.app-1").unwrap().name(), "my.app-1");
        for bad in ["/App", "/a_b", "/-a", "/a-", "/a..b", "/..", "/a b"] {
            assert!(PathId::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn names_for_tasks_and_dns() {
        let p = PathId::parse("/group/app").unwrap();
        assert_eq!(p.safe(), "group_app");
        assert_eq!(p.reversed_dotted(), "app.group");
        assert_eq!(p.parent().to_string(), "/group");
        assert!(p.starts_with(&PathId::parse("/group").unwrap()));
    }
}
