//! `cutover mock-backend`: see [`crate::mock`].

pub use crate::mock::MockArgs as Args;

pub fn run(args: Args) -> u8 {
    let _ = args;
    super::EXIT_USAGE
}
