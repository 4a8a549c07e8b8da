//! The stored form of the domain's enums: one name per variant, used in the
//! database and in messages; `FromStr` refuses any other text.

/// Declares `as_str` (a `const fn`), `FromStr` and `Display` of an enum from its
/// variants' stored names; `$noun` names the enum in the refusal.
macro_rules! stored_names {
    ($ty:ty, $noun:literal { $($variant:ident => $name:literal),+ $(,)? }) => {
        impl $ty {
            /// The stored and serialised form.
            pub const fn as_str(&self) -> &'static str {
                match self {
                    $(Self::$variant => $name),+
                }
            }
        }

        impl std::str::FromStr for $ty {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($name => Ok(Self::$variant),)+
                    other => Err(format!(concat!("unknown ", $noun, " {:?}"), other)),
                }
            }
        }

        impl std::fmt::Display for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}
pub(crate) use stored_names;
