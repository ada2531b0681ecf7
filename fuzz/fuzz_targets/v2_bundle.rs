//! Compact V2 bundle parsing: `V2Bundle::parse`, `tile_range`/`tile` of every slot, `dead_bytes`.
//!
//! A V2 bundle is at least 131 136 bytes (header and index), too large for libFuzzer to mutate
//! usefully, so the input is a compact description expanded into a bundle:
//! - byte 0 = 0: the rest of the input is the file as is (short files, bad headers);
//! - byte 0 = n > 0: a 64-byte header, then n index entries of (u16 slot, u64 entry), then data
//!   appended after the index. Slots without an entry are empty (offset 4, size 0).
//!
//! Properties: no panic; every slot's checked range lies inside the file, after the index, with
//! the record's size prefix equal to its length; `tile` returns exactly those bytes.
#![no_main]

use bundlefs::format::v2::{self, V2Bundle, DATA_START, EMPTY_ENTRY, HEADER_LEN, RECORD_PREFIX};
use bundlefs::format::{Slot, BUNDLE_TILES};
use libfuzzer_sys::fuzz_target;

fn take<'a>(data: &mut &'a [u8], n: usize) -> &'a [u8] {
    let n = n.min(data.len());
    let (a, b) = data.split_at(n);
    *data = b;
    a
}

fn expand(input: &[u8]) -> Vec<u8> {
    let Some((&n, mut rest)) = input.split_first() else {
        return Vec::new();
    };
    if n == 0 {
        return rest.to_vec();
    }
    let mut file = Vec::with_capacity(DATA_START as usize + rest.len());
    let header = take(&mut rest, HEADER_LEN);
    file.extend_from_slice(header);
    file.resize(HEADER_LEN, 0);
    for _ in 0..BUNDLE_TILES {
        file.extend_from_slice(&EMPTY_ENTRY.to_le_bytes());
    }
    for _ in 0..n {
        let e = take(&mut rest, 10);
        if e.len() < 10 {
            break;
        }
        let slot = usize::from(u16::from_le_bytes([e[0], e[1]])) % BUNDLE_TILES;
        let at = HEADER_LEN + 8 * slot;
        file[at..at + 8].copy_from_slice(&e[2..10]);
    }
    file.extend_from_slice(rest);
    file
}

fuzz_target!(|input: &[u8]| {
    let file = expand(input);
    let Ok(b) = V2Bundle::parse(&file) else {
        return;
    };
    assert_eq!(b.len(), file.len() as u64);
    let _ = b.is_empty();
    let _ = b.dead_bytes();
    let _ = (b.header_max_tile(), b.header_file_size());
    // Empty slots are Ok(None) by construction; every slot with an entry is checked.
    let slots: Vec<Slot> = b.entries().map(|(s, _)| s).collect();
    assert!(slots.len() <= BUNDLE_TILES);
    for slot in slots {
        let range = b.tile_range(slot);
        if let Ok(Some(r)) = &range {
            assert!(
                r.start as u64 >= DATA_START + RECORD_PREFIX,
                "{slot:?}: {r:?} in index"
            );
            assert!(
                r.start <= r.end && r.end <= file.len(),
                "{slot:?}: {r:?} past EOF"
            );
            let at = r.start - RECORD_PREFIX as usize;
            let prefix = u32::from_le_bytes(file[at..at + 4].try_into().unwrap());
            assert_eq!(prefix as usize, r.len(), "{slot:?}: size prefix");
            let e = b.entry(slot);
            assert_eq!((e.offset() as usize, e.size() as usize), (r.start, r.len()));
        }
        match (range, b.tile(slot)) {
            (Ok(Some(r)), Ok(Some(t))) => assert_eq!(t, &file[r]),
            (Err(_), Err(_)) => {}
            (r, t) => panic!(
                "{slot:?}: tile_range {r:?} but tile {:?}",
                t.map(|t| t.map(<[u8]>::len))
            ),
        }
    }
    // What parses must also pass the header check the writer relies on.
    assert!(v2::check_header(&file).is_ok());
});
