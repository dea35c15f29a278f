//! Each fault knob, with probability 1 so the outcome is certain.
