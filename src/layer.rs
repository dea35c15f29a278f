//! What every configuration section is written with, wherever it lives (`config` for the
//! run's own sections, each source's file for its own): the [`Layer`] of one partial
//! configuration over another, the `raw_section!` macro that derives it from a section's
//! field list, and [`secs`], the check of a duration key. A leaf: it imports nothing of the
//! crate, so that a source can declare its settings without importing `config`.

use std::time::Duration;

/// Layers one partial configuration over a lower one: every value `over` sets wins.
pub trait Layer {
    /// `self` with every value `over` sets replaced by `over`'s.
    fn layer(self, over: Self) -> Self;
}

impl<T> Layer for Option<T> {
    fn layer(self, over: Self) -> Self {
        over.or(self)
    }
}

/// Declares a configuration section as written and derives its [`Layer`] from the same field
/// list. A `macro_rules!` rather than the `merge` crate or `figment`: the layers (file,
/// environment, flags) are already built as `RawConfig`s with serde and clap, so all that was
/// missing is "each field: over, else self", and this writes it without a new dependency or a
/// second list of fields that could fall out of step with the struct.
macro_rules! raw_section {
    (
        $(#[$attr:meta])*
        pub struct $name:ident {
            $( $(#[$fattr:meta])* pub $field:ident : $ty:ty, )*
        }
    ) => {
        $(#[$attr])*
        pub struct $name {
            $( $(#[$fattr])* pub $field: $ty, )*
        }

        impl $crate::layer::Layer for $name {
            fn layer(self, over: Self) -> Self {
                $name { $( $field: $crate::layer::Layer::layer(self.$field, over.$field), )* }
            }
        }
    };
}
pub(crate) use raw_section;

/// A duration key given in seconds: `default` when unset; above 0 and below a day, else a
/// problem naming `key` (and the default is used so that every other key is still checked).
pub fn secs(key: &str, value: Option<f64>, default: f64, problems: &mut Vec<String>) -> Duration {
    let v = value.unwrap_or(default);
    if !(v.is_finite() && v > 0.0 && v < 86_400.0) {
        problems.push(format!(
            "`{key}` is {v}: use a number of seconds above 0 and below 86400 (a day)"
        ));
        return Duration::from_secs_f64(default);
    }
    Duration::from_secs_f64(v)
}
