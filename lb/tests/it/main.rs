//! agora lb's tests: one binary, as every crate has (DESIGN.md, tests).

mod fuzz;
mod render;
mod runtime;
