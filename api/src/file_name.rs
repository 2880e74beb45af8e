//! [`FileName`]: the name a file is shared and saved under.

use std::borrow::Borrow;
use std::ops::Deref;

use crate::InvalidField;

/// Longest file name, in bytes, that the tracker accepts.
pub const MAX_NAME_LEN: usize = 255;

/// A shared file's name: one path component, 1 to [`MAX_NAME_LEN`] bytes, no
/// `/`, `\`, NUL or other control characters, not `.` or `..`.
///
/// So a name from the tracker can be joined to a download folder without
/// escaping it.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FileName(String);

/// Checks a file name by the rules of [`FileName`], without keeping it.
pub fn validate_name(name: &str) -> Result<(), InvalidField> {
    if name.is_empty() {
        return Err(InvalidField("file name is empty".into()));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(InvalidField(format!(
            "file name is {} bytes long; the limit is {MAX_NAME_LEN}",
            name.len()
        )));
    }
    if name == "." || name == ".." {
        return Err(InvalidField(format!("file name {name:?} is not allowed")));
    }
    if let Some(c) = name
        .chars()
        .find(|c| *c == '/' || *c == '\\' || c.is_control())
    {
        return Err(InvalidField(format!(
            "file name {name:?} contains {c:?}; a name is one path component without \
             slashes, backslashes or control characters"
        )));
    }
    Ok(())
}

impl FileName {
    /// Checks `name` and keeps it.
    pub fn new(name: impl Into<String>) -> Result<Self, InvalidField> {
        let name = name.into();
        validate_name(&name)?;
        Ok(FileName(name))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The name as a `String`.
    pub fn into_string(self) -> String {
        self.0
    }
}

impl Deref for FileName {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for FileName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl AsRef<std::path::Path> for FileName {
    fn as_ref(&self) -> &std::path::Path {
        self.0.as_ref()
    }
}

impl Borrow<str> for FileName {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl PartialEq<str> for FileName {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<String> for FileName {
    fn eq(&self, other: &String) -> bool {
        &self.0 == other
    }
}

impl PartialEq<&str> for FileName {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

impl std::fmt::Display for FileName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::fmt::Debug for FileName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&self.0, f)
    }
}

impl std::str::FromStr for FileName {
    type Err = InvalidField;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        FileName::new(s)
    }
}

impl TryFrom<String> for FileName {
    type Error = InvalidField;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        FileName::new(s)
    }
}

impl TryFrom<&str> for FileName {
    type Error = InvalidField;
    fn try_from(s: &str) -> Result<Self, Self::Error> {
        FileName::new(s)
    }
}

impl From<FileName> for String {
    fn from(name: FileName) -> String {
        name.0
    }
}

impl serde::Serialize for FileName {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for FileName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        FileName::new(name).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(FileName::new("a.txt").is_ok());
        assert!(FileName::new("ünïcødé file (1).mp4").is_ok());
        for bad in ["", ".", "..", "a/b", "a\\b", "a\0b", "a\nb", "\u{7f}"] {
            assert!(FileName::new(bad).is_err(), "{bad:?} accepted");
        }
        assert!(FileName::new("x".repeat(MAX_NAME_LEN)).is_ok());
        assert!(FileName::new("x".repeat(MAX_NAME_LEN + 1)).is_err());
    }

    #[test]
    fn deserialising_a_bad_name_says_why() {
        let err = serde_json::from_str::<FileName>("\"../etc/passwd\"")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            err.starts_with(
                "file name \"../etc/passwd\" contains '/'; a name is one path component"
            ),
            "{err}"
        );
        let ok: FileName = serde_json::from_str("\"a b.txt\"").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(ok, "a b.txt");
    }
}
