//! `corvid chat`: the full-screen terminal client, a model (`model.rs`), a pure view
//! (`view.rs`), an update function (`update.rs`), and the runtime that joins them to the
//! terminal and to the server (`runtime.rs`).
//!
//! Keys, pushed events and the server's answers all become an `Input`; `update` turns the
//! state and the input into a new state and `Effect`s (requests to make); the runtime
//! makes them with `corvid-client` and feeds the answers back as inputs. The screen is
//! redrawn from the state after every input.

mod model;
mod runtime;
mod update;
mod view;

#[cfg(test)]
mod tests;

pub use runtime::run;
