//! Level selections (`--levels 0-7`): a value type every layer uses.

/// An inclusive range of levels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LevelRange {
    pub min: u8,
    pub max: u8,
}

impl LevelRange {
    pub const ALL: LevelRange = LevelRange {
        min: 0,
        max: u8::MAX,
    };
    pub fn contains(&self, l: u8) -> bool {
        (self.min..=self.max).contains(&l)
    }
}

impl std::str::FromStr for LevelRange {
    type Err = String;
    /// `5`, `0-7`, `3-` (from 3 up), `-4` (up to 4).
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let p = |v: &str, d: u8| -> std::result::Result<u8, String> {
            if v.is_empty() {
                Ok(d)
            } else {
                v.trim()
                    .parse::<u8>()
                    .map_err(|_| format!("bad level {v:?} in {s:?} (want e.g. 0-7)"))
            }
        };
        let r = match s.split_once('-') {
            Some((a, b)) => LevelRange {
                min: p(a, 0)?,
                max: p(b, u8::MAX)?,
            },
            None => {
                let l = p(s, 0)?;
                LevelRange { min: l, max: l }
            }
        };
        if r.min > r.max {
            return Err(format!("empty level range {s:?}"));
        }
        Ok(r)
    }
}
