//! Tests of the checkpoint encodings: sizes, round trips of every version, and the page
//! checks against damaged and hostile pages.

use super::*;

#[test]
fn sizes_and_roundtrip() {
    assert_eq!(CHECKPOINT_HEADER_SIZE, 64);
    assert_eq!(VERSION_ENTRY_SIZE, 32);
    assert_eq!(KEY_ENTRY_SIZE, 32);
    let c = Checkpoint {
        log_uuid: 9,
        covered_end: 4296,
        last_tid: Tid(1),
        last_tx_crc: 5,
        txs: vec![TxEntry {
            tid: Tid(1),
            off: 4096,
            len: 200,
            wall_ns: 3,
        }],
        keys: vec![(
            Key::Block { array: 1, blk: 4 },
            vec![Version {
                tid: Tid(1),
                rec_off: 4144,
                encoding: Encoding::Raw,
                flags: 0,
                pad: 3,
                logical_len: 9,
                stored_len: 9,
                data_crc: 1,
            }],
        )],
    };
    let v2 = c.encode_v2().unwrap();
    assert_eq!(v2.len(), 64 + 32 + 32 + 32 + 4);
    let v3 = c.encode().unwrap();
    assert_eq!(v3.len(), 128 + 32 + 32 + 32 + 4);
    for b in [v2, v3] {
        assert_eq!(Checkpoint::decode(&b).unwrap(), c);
        for i in 0..b.len() {
            let mut x = b.clone();
            x[i] ^= 0x10;
            assert!(Checkpoint::decode(&x).is_err());
            assert!(Checkpoint::decode(&b[..i]).is_err());
        }
    }
}

/// A checkpoint of `n` keys with 1..=3 versions each over `n` transactions, as the
/// store would write it.
fn big(n: u64) -> Checkpoint {
    let txs: Vec<TxEntry> = (0..n)
        .map(|i| TxEntry {
            tid: Tid(i + 1),
            off: 4096 + 1000 * i,
            len: 1000,
            wall_ns: i,
        })
        .collect();
    let keys = (0..n)
        .map(|i| {
            let key = if i + 1 == n {
                Key::Names
            } else if i % 10 == 0 {
                Key::Meta { array: i }
            } else {
                Key::Block {
                    array: i / 10,
                    blk: i,
                }
            };
            let vs = (0..=(i % 3))
                .map(|j| Version {
                    tid: Tid((i + j) % n + 1).max(Tid(j + 1)),
                    rec_off: 4096 + 1000 * ((i + j) % n) + 48,
                    encoding: Encoding::Raw,
                    flags: 0,
                    pad: 0,
                    logical_len: 10,
                    stored_len: 10,
                    data_crc: 7,
                })
                .collect::<Vec<_>>();
            (key, vs)
        })
        .map(|(k, mut vs)| {
            vs.sort_by_key(|v| v.tid);
            vs.dedup_by_key(|v| v.tid);
            (k, vs)
        })
        .collect::<Vec<_>>();
    let mut keys = keys;
    keys.sort_by_key(|(k, _)| *k);
    Checkpoint {
        log_uuid: 5,
        covered_end: 4096 + 1000 * n,
        last_tid: Tid(n),
        last_tx_crc: 1,
        txs,
        keys,
    }
}

#[test]
fn pages_check_each_by_itself() {
    let c = big(700);
    let b = c.encode().unwrap();
    let h = Header3::decode(&b[..4096], b.len() as u64).unwrap();
    assert!(h.n_pages() > 10, "{} pages", h.n_pages());
    assert_eq!(Checkpoint::decode(&b).unwrap(), c);
    for p in 0..h.n_pages() {
        let at = p as usize * PAGE;
        let page = &b[at..at + h.page_len(p)];
        check_page(&h, p, page).unwrap();
        // Every page is its own: a flip anywhere in it fails it, and only it.
        for i in [0, 31, 77, page.len() - 5, page.len() - 1] {
            let mut x = page.to_vec();
            x[i] ^= 4;
            assert!(check_page(&h, p, &x).is_err(), "page {p} byte {i}");
        }
        // A page moved to another place fails (its number is in its CRC).
        if p > 0 && h.page_len(p) == h.page_len(p - 1) {
            assert!(check_page(&h, p - 1, page).is_err());
        }
    }
    // The header checks the counts against the file's length.
    assert!(Header3::decode(&b[..4096], b.len() as u64 - 32).is_err());
    // Keys are found where the header says, in order.
    let mut prev = None;
    for i in 0..h.n_keys {
        let (p, off) = slot_place(h.key_slot(i));
        let at = p as usize * PAGE + off;
        let k = decode_key_slot(b[at..at + 32].try_into().unwrap()).unwrap();
        assert_eq!(k.key, c.keys[i as usize].0);
        assert!(prev < Some(key_sort(&k.key)));
        prev = Some(key_sort(&k.key));
    }
}

#[test]
fn a_page_that_passes_its_crc_but_holds_impossible_values_fails() {
    let c = big(300);
    let b = c.encode().unwrap();
    let h = Header3::decode(&b[..4096], b.len() as u64).unwrap();
    // Rewrite one slot of each kind with a bad value and a matching CRC.
    let reseal = |p: u64, page: &mut Vec<u8>| {
        let n = page.len() - 4;
        let crc = page_crc(p, &page[..n]);
        page[n..].copy_from_slice(&crc.to_le_bytes());
    };
    let cases: Vec<(u64, usize, u64)> = vec![
        (h.version_slot(3), 0, u64::MAX),      // tid past the last
        (h.version_slot(5), 8, c.covered_end), // record past the covered end
        (h.key_slot(2), 24, h.n_versions),     // versions past the table
        (h.key_slot(2), 8, u64::MAX),          // array past the largest
        (h.tx_slot(1), 8, 1),                  // transaction inside the log header
    ];
    for (s, field, val) in cases {
        let (p, off) = slot_place(s);
        let at = p as usize * PAGE;
        let mut page = b[at..at + h.page_len(p)].to_vec();
        page[off + field..off + field + 8].copy_from_slice(&val.to_le_bytes());
        reseal(p, &mut page);
        assert!(check_page(&h, p, &page).is_err(), "slot {s} field {field}");
    }
}
