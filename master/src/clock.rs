//! The shell's clock: [`agora_proto::time::Clock`], shared with the agent.

pub use agora_proto::time::Clock;
