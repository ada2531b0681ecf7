//! Values typed on the command line and in settings, each with one parser shared by every command:
//! an extent (`XMIN,YMIN,XMAX,YMAX`), a tile address (`L/R/C`), a colour (`RRGGBB`), a byte size
//! (`256M`), a share (`20%`) and a number of seconds. Every parser's error says what it wants.

use std::str::FromStr;
use std::time::Duration;

use super::conf::Envelope;
use super::TileAddr;

/// An extent: `XMIN,YMIN,XMAX,YMAX` in map units, as one argument. Commas and/or white space
/// separate the four numbers, so `-180,-90,180,90` and `"-180 -90 180 90"` both read; XMIN < XMAX and
/// YMIN < YMAX are required (a point or an inverted box selects nothing and is refused).
impl FromStr for Envelope {
    type Err = String;
    fn from_str(s: &str) -> Result<Envelope, String> {
        let parts: Vec<&str> = s
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|p| !p.is_empty())
            .collect();
        let want = "want XMIN,YMIN,XMAX,YMAX (four numbers, e.g. -180,-90,180,90)";
        let v: Vec<f64> = parts
            .iter()
            .map(|p| p.parse::<f64>().ok().filter(|v| v.is_finite()))
            .collect::<Option<_>>()
            .ok_or_else(|| format!("{s:?}: not numbers; {want}"))?;
        let [xmin, ymin, xmax, ymax] = v[..] else {
            return Err(format!("{s:?}: {} number(s); {want}", v.len()));
        };
        if !(xmin < xmax && ymin < ymax) {
            return Err(format!(
                "{s:?}: empty box; {want} with XMIN < XMAX and YMIN < YMAX"
            ));
        }
        Ok(Envelope {
            xmin,
            ymin,
            xmax,
            ymax,
        })
    }
}

/// A tile: `L/R/C` in decimal (`3/2/5`), or `Lnn/Rxxxxxxxx/Cxxxxxxxx[.ext]` as exploded caches
/// name it (row and column in hexadecimal, either case).
impl FromStr for TileAddr {
    type Err = String;
    fn from_str(s: &str) -> Result<TileAddr, String> {
        let bad = || format!("{s:?}: want L/R/C (e.g. 3/2/5) or L03/R00000002/C00000005");
        let parts: Vec<&str> = s.trim().trim_matches('/').split('/').collect();
        let [l, r, c] = parts[..] else {
            return Err(bad());
        };
        let c = c.split('.').next().unwrap_or(c);
        let named = |v: &str, p: char| {
            v.strip_prefix(p)
                .or_else(|| v.strip_prefix(p.to_ascii_lowercase()))
                .map(str::to_string)
        };
        let hex = |v: &str| u32::from_str_radix(v, 16).map_err(|_| bad());
        let dec = |v: &str| v.parse::<u32>().map_err(|_| bad());
        let level = |v: &str| v.parse::<u8>().map_err(|_| bad());
        match (named(l, 'L'), named(r, 'R'), named(c, 'C')) {
            (Some(l), Some(r), Some(c)) => Ok(TileAddr::new(level(&l)?, hex(&r)?, hex(&c)?)),
            (None, None, None) => Ok(TileAddr::new(level(l)?, dec(r)?, dec(c)?)),
            _ => Err(bad()),
        }
    }
}

/// A colour: `RRGGBB`, `#RRGGBB` (hexadecimal) or `R,G,B` (decimal 0-255).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rgb(pub [u8; 3]);

impl FromStr for Rgb {
    type Err = String;
    fn from_str(s: &str) -> Result<Rgb, String> {
        let t = s.trim().trim_start_matches('#');
        let bad = || format!("{s:?}: want RRGGBB, #RRGGBB or R,G,B (e.g. ffffff or 255,255,255)");
        if t.contains(',') {
            let v: Vec<u8> = t
                .split(',')
                .map(|p| p.trim().parse::<u8>())
                .collect::<Result<_, _>>()
                .map_err(|_| bad())?;
            return <[u8; 3]>::try_from(v).map(Rgb).map_err(|_| bad());
        }
        if t.len() != 6 || !t.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad());
        }
        let byte = |i: usize| u8::from_str_radix(&t[i..i + 2], 16).map_err(|_| bad());
        Ok(Rgb([byte(0)?, byte(2)?, byte(4)?]))
    }
}

/// A size in bytes: a whole number with an optional binary unit, `k`/`K`, `M`, `G` (each also as
/// `kB`/`KiB`…, all powers of 1024): `256M`, `64MiB`, `1G`, `512k`, `1048576`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl ByteSize {
    /// The size as a `usize` (saturating on 32-bit targets).
    pub fn bytes(self) -> usize {
        usize::try_from(self.0).unwrap_or(usize::MAX)
    }
}

impl FromStr for ByteSize {
    type Err = String;
    fn from_str(s: &str) -> Result<ByteSize, String> {
        let t = s.trim();
        let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let n: u64 = num
            .parse()
            .map_err(|_| format!("{s:?}: want a size like 256M (units k, M, G)"))?;
        let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "k" | "kb" | "kib" => 1 << 10,
            "m" | "mb" | "mib" => 1 << 20,
            "g" | "gb" | "gib" => 1 << 30,
            u => return Err(format!("{s:?}: unknown unit {u:?} (want k, M or G)")),
        };
        n.checked_mul(mult)
            .map(ByteSize)
            .ok_or_else(|| format!("{s:?}: too large"))
    }
}

/// A share between 0 and 1: `20%` or `0.2`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Share(pub f64);

impl FromStr for Share {
    type Err = String;
    fn from_str(s: &str) -> Result<Share, String> {
        let t = s.trim();
        match t.strip_suffix('%') {
            Some(p) => p.trim().parse::<f64>().map(|v| v / 100.0),
            None => t.parse::<f64>(),
        }
        .ok()
        .filter(|v| (0.0..=1.0).contains(v))
        .map(Share)
        .ok_or_else(|| format!("{s:?}: want a share from 0% to 100%, like 20% or 0.2"))
    }
}

/// A length of time given in seconds, fractions allowed (`0.5`, `3600`); never negative.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seconds(pub Duration);

impl FromStr for Seconds {
    type Err = String;
    fn from_str(s: &str) -> Result<Seconds, String> {
        s.trim()
            .parse::<f64>()
            .ok()
            .and_then(|v| Duration::try_from_secs_f64(v).ok())
            .map(Seconds)
            .ok_or_else(|| format!("{s:?}: want a number of seconds >= 0, like 2 or 0.5"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extents() {
        let e: Envelope = "-180,-90,180,90".parse().unwrap();
        assert_eq!(
            (e.xmin, e.ymin, e.xmax, e.ymax),
            (-180.0, -90.0, 180.0, 90.0)
        );
        let e: Envelope = " -2.5e6 , 1e3  3e6,4e6 ".parse().unwrap();
        assert_eq!((e.xmin, e.ymin, e.xmax, e.ymax), (-2.5e6, 1e3, 3e6, 4e6));
        for bad in [
            "1,2,3",
            "1,2,3,4,5",
            "a,b,c,d",
            "3,0,1,5",
            "0,5,1,5",
            "",
            "nan,0,1,1",
        ] {
            let err = bad.parse::<Envelope>().unwrap_err();
            assert!(err.contains("XMIN,YMIN,XMAX,YMAX"), "{bad}: {err}");
        }
    }

    #[test]
    fn tiles() {
        assert_eq!("3/2/5".parse::<TileAddr>(), Ok(TileAddr::new(3, 2, 5)));
        assert_eq!(
            "L03/R0000000a/C000000FF.png".parse::<TileAddr>(),
            Ok(TileAddr::new(3, 10, 255))
        );
        assert_eq!(
            "/l12/r00000010/c00000011/".parse::<TileAddr>(),
            Ok(TileAddr::new(12, 16, 17))
        );
        for bad in ["3/2", "L03/2/5", "300/1/1", "3/x/1", "3/2/5/1"] {
            assert!(bad.parse::<TileAddr>().is_err(), "{bad}");
        }
        // What Display writes, FromStr reads.
        let t = TileAddr::new(7, 100, 3);
        assert_eq!(t.to_string().parse::<TileAddr>(), Ok(t));
    }

    #[test]
    fn colours() {
        assert_eq!("ff8000".parse::<Rgb>(), Ok(Rgb([255, 128, 0])));
        assert_eq!("#FF8000".parse::<Rgb>(), Ok(Rgb([255, 128, 0])));
        assert_eq!("1, 2,3".parse::<Rgb>(), Ok(Rgb([1, 2, 3])));
        for bad in ["fff", "gg0000", "1,2", "256,0,0", "é0000"] {
            assert!(bad.parse::<Rgb>().unwrap_err().contains("RRGGBB"), "{bad}");
        }
    }

    #[test]
    fn sizes() {
        assert_eq!("256M".parse(), Ok(ByteSize(256 << 20)));
        assert_eq!("64MiB".parse(), Ok(ByteSize(64 << 20)));
        assert_eq!("1G".parse(), Ok(ByteSize(1 << 30)));
        assert_eq!("512k".parse(), Ok(ByteSize(512 << 10)));
        assert_eq!("4096".parse(), Ok(ByteSize(4096)));
        assert!("12Q".parse::<ByteSize>().is_err());
        assert!("M".parse::<ByteSize>().is_err());
        assert!("-1M".parse::<ByteSize>().is_err());
        assert!("99999999999999G".parse::<ByteSize>().is_err());
    }

    #[test]
    fn shares_and_seconds() {
        assert_eq!("20%".parse(), Ok(Share(0.2)));
        assert_eq!("0.5".parse(), Ok(Share(0.5)));
        assert!("120%".parse::<Share>().is_err());
        assert!("-0.1".parse::<Share>().is_err());
        assert_eq!("1.5".parse(), Ok(Seconds(Duration::from_millis(1500))));
        assert!("-1".parse::<Seconds>().is_err());
        assert!("soon".parse::<Seconds>().is_err());
    }
}
