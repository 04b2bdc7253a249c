//! Time as the core sees it: [`agora_proto::time::Time`], shared with the
//! agent core.

pub use agora_proto::time::Time;
