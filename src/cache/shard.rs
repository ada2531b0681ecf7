//! Splitting a job among workers that an engine starts (a Kubernetes Indexed Job, a Slurm job
//! array, an AWS Batch array job): worker `index` of `count` (`--shard I/N`, I from 0, as
//! Kubernetes' `JOB_COMPLETION_INDEX` and AWS Batch's `AWS_BATCH_JOB_ARRAY_INDEX` count) takes the
//! bundles whose [`bundle_hash`] is `index` modulo `count`. The share is a fixed function of the
//! bundle alone, so shards never take the same bundle, their shares together are every bundle, and
//! a rerun of a shard takes the same share.

use std::str::FromStr;

use crate::format::BundleId;

/// One worker's share of a job: `index` of `count` (0 ≤ index < count).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    /// This worker's number, from 0.
    pub index: u32,
    /// How many workers share the job (at least 1).
    pub count: u32,
}

/// A bundle's place in the shards: 64-bit FNV-1a (Fowler–Noll–Vo, the IETF draft
/// `draft-eastlake-fnv`, offset basis 0xcbf29ce484222325, prime 0x100000001b3) over its level byte
/// and its first row and column as 4 little-endian bytes each. Fixed for all time: changing it
/// would move bundles between shards of a job half done.
pub fn bundle_hash(id: &BundleId) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let bytes = std::iter::once(id.level)
        .chain(id.row0.to_le_bytes())
        .chain(id.col0.to_le_bytes());
    for b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

impl Shard {
    /// Whether bundle `id` is this shard's.
    pub fn takes(&self, id: &BundleId) -> bool {
        self.count <= 1 || bundle_hash(id) % u64::from(self.count) == u64::from(self.index)
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl FromStr for Shard {
    type Err = String;

    /// `I/N`: worker I (from 0) of N. Errors name the value and what is wrong: not two numbers,
    /// N of 0, I not below N (`4/4`: the workers of 4 are 0-3).
    fn from_str(s: &str) -> Result<Shard, String> {
        let (i, n) = s
            .split_once('/')
            .ok_or_else(|| format!("shard {s:?}: give it as I/N, worker I (from 0) of N"))?;
        let num = |v: &str, what: &str| {
            v.trim()
                .parse::<u32>()
                .map_err(|_| format!("shard {s:?}: {what} {v:?} is not a whole number"))
        };
        let (index, count) = (num(i, "I")?, num(n, "N")?);
        if count == 0 {
            return Err(format!("shard {s:?}: N must be 1 or more"));
        }
        if index >= count {
            return Err(format!(
                "shard {s:?}: I counts from 0, so the workers of {count} are 0 to {}",
                count - 1
            ));
        }
        Ok(Shard { index, count })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_and_refusals() {
        assert_eq!("2/4".parse::<Shard>(), Ok(Shard { index: 2, count: 4 }));
        for bad in ["4/4", "1/0", "x/2", "3", "-1/2", "1/2/3"] {
            let e = bad.parse::<Shard>().unwrap_err();
            assert!(e.contains(bad), "{e}");
        }
        assert!("4/4".parse::<Shard>().unwrap_err().contains("0 to 3"));
    }

    #[test]
    fn shares_are_disjoint_whole_and_even() {
        let n = 4u32;
        let mut counts = [0u32; 4];
        for level in 0..12u8 {
            for r in 0..16u32 {
                for c in 0..16u32 {
                    let id = BundleId {
                        level,
                        row0: r * 128,
                        col0: c * 128,
                    };
                    let takers: Vec<u32> = (0..n)
                        .filter(|i| {
                            Shard {
                                index: *i,
                                count: n,
                            }
                            .takes(&id)
                        })
                        .collect();
                    assert_eq!(takers.len(), 1, "{id:?}");
                    counts[takers[0] as usize] += 1;
                }
            }
        }
        // 3072 bundles: each share within 10% of a quarter.
        for c in counts {
            assert!((691..=845).contains(&c), "{counts:?}");
        }
        // The function is fixed: the value an independent FNV-1a (Python, over the 9 zero bytes
        // of bundle L0 R0 C0) gives.
        let id = BundleId {
            level: 0,
            row0: 0,
            col0: 0,
        };
        assert_eq!(bundle_hash(&id), 0xe604_823a_2490_29bf);
    }
}
