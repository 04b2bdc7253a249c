//! Typed ids for the core's maps. They order and hash (the proto id messages
//! do not order), and convert to and from the proto messages at the edges.

use std::sync::Arc;

use agora_proto::v1;

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $proto:ty) => {
        $(#[$doc])*
        ///
        /// Shared (`Arc<str>`): ids are cloned into many maps and every
        /// offer, so a clone must not allocate.
        #[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(pub Arc<str>);

        impl $name {
            /// The proto id message.
            pub fn to_proto(&self) -> $proto {
                <$proto>::from(self)
            }

            /// An id with this value.
            pub fn new(value: impl Into<Arc<str>>) -> Self {
                $name(value.into())
            }

            /// The id's string.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl From<&$proto> for $name {
            fn from(p: &$proto) -> Self {
                $name(p.value.as_str().into())
            }
        }

        impl From<&$name> for $proto {
            fn from(id: &$name) -> Self {
                <$proto>::default_with(id.0.to_string())
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                $name(s.into())
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

trait DefaultWith {
    fn default_with(value: String) -> Self;
}

macro_rules! default_with {
    ($($t:ty),*) => {
        $(impl DefaultWith for $t {
            fn default_with(value: String) -> Self {
                Self { value }
            }
        })*
    };
}

default_with!(
    v1::FrameworkId,
    v1::AgentId,
    v1::OfferId,
    v1::TaskId,
    v1::ExecutorId
);

id_type!(
    /// A framework.
    FrameworkId,
    v1::FrameworkId
);
id_type!(
    /// An agent.
    AgentId,
    v1::AgentId
);
id_type!(
    /// An offer.
    OfferId,
    v1::OfferId
);
id_type!(
    /// A task (unique within its framework).
    TaskId,
    v1::TaskId
);
id_type!(
    /// An executor (unique within its framework).
    ExecutorId,
    v1::ExecutorId
);

/// A framework's scheduler subscription stream (the `Mesos-Stream-Id`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StreamId(pub String);

impl std::fmt::Display for StreamId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// An agent's connection (one gRPC stream), numbered by the shell.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConnId(pub u64);

/// An HTTP request waiting for the core's verdict, numbered by the shell.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RequestId(pub u64);
