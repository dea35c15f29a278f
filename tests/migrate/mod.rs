//! `cfimg migrate` end to end against the emulator.
