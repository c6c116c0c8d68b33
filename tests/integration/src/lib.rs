//! Shared harness for the privileged tests.
