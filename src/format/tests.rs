//! Tests of the record encodings: sizes against the spec, round trips, and every decoder
//! against hostile bytes.

use super::delta::DELTA_PAGE_COST;
use super::*;

#[test]
fn record_sizes_match_the_spec() {
    assert_eq!(FILE_HEADER_FIELDS, 64);
    assert_eq!(
        (FILE_HEADER_FIELDS + FILE_HEADER_PADDING) as u64,
        FILE_HEADER_SIZE
    );
    assert_eq!(TX_HEADER_SIZE, 48);
    assert_eq!(RECORD_HEADER_SIZE, 48);
    assert_eq!(TX_END_SIZE, 32);
    assert_eq!(
        FileHeader {
            version: 1,
            align: 4096,
            uuid: 1,
            created_ns: 2,
            base_tid: Tid(0)
        }
        .encode()
        .len(),
        4096
    );
    let rh = RecordHeader {
        key: Key::Block { array: 1, blk: 2 },
        encoding: Encoding::Hole,
        flags: 0,
        pad: 0,
        prev_off: 0,
        logical_len: 0,
        stored_len: 0,
        data_crc: 0,
    };
    assert_eq!(rh.encode().len(), RECORD_HEADER_SIZE);
    assert_eq!(rh.span(), 48);
}

#[test]
fn file_header_roundtrip_and_bitflips() {
    let h = FileHeader {
        version: 1,
        align: 4096,
        uuid: 77,
        created_ns: 5,
        base_tid: Tid(3),
    };
    let b = h.encode();
    assert_eq!(FileHeader::decode(&b).unwrap(), h);
    for bit in 0..FILE_HEADER_FIELDS * 8 {
        let mut c = b.clone();
        c[bit / 8] ^= 1 << (bit % 8);
        assert!(FileHeader::decode(&c).is_err(), "bit {bit}");
    }
}

#[test]
fn raw_payloads_are_page_aligned() {
    let data = vec![7u8; 5000];
    let recs = [
        RecordIn {
            key: Key::Names,
            encoding: Encoding::Hole,
            flags: 0,
            prev_off: 0,
            logical_len: 0,
            payload: PayloadSrc::Mem(&[]),
            data_crc: 0,
            page_crcs: None,
        },
        RecordIn {
            key: Key::Block { array: 1, blk: 0 },
            encoding: Encoding::Raw,
            flags: 0,
            prev_off: 0,
            logical_len: 5000,
            payload: PayloadSrc::Mem(&data),
            data_crc: crate::verify::crc32(&data),
            page_crcs: None,
        },
    ];
    let tx = encode_tx(4096, Tid(1), 0, "u", "d", &recs).unwrap();
    let off = tx.record_offsets[1] + tx.headers[1].payload_rel();
    assert_eq!(off % PAGE as u64, 0);
    let bytes: Vec<u8> = tx.to_bytes();
    assert_eq!(bytes.len() as u64, tx.total_len);
    let h = TxHeader::decode(&bytes, 4096).unwrap();
    assert_eq!(h.tid, Tid(1));
    let p = usize::try_from(h.prefix_len()).unwrap();
    assert_eq!(
        h.check_prefix(&bytes[..p], 4096).unwrap(),
        ("u".into(), "d".into())
    );
    let end_at = bytes.len() - TX_END_SIZE;
    assert_eq!(
        TxEnd::decode(&bytes[end_at..], 0, None).unwrap().total_len,
        tx.total_len
    );
}

#[test]
fn delta_payload_roundtrip_apply_and_bounds() {
    let page = PAGE;
    let p1 = vec![1u8; page];
    let p3 = vec![3u8; page];
    let b = DeltaPayload::encode(4 * PAGE as u32, &[(1, &p1), (3, &p3)]);
    assert_eq!(b.len(), DELTA_HEADER_SIZE + 2 * DELTA_PAGE_COST);
    let d = DeltaPayload::decode(&b, 0).unwrap();
    assert_eq!((d.result_len, d.n_pages()), (4 * PAGE as u32, 2));
    // Base of 6 pages of 9s, applied: pages 1 and 3 replaced, pages 4.. cut to zero.
    let mut blk = vec![9u8; 8 * page];
    blk[6 * page..].fill(0);
    d.apply(&mut blk, 6 * page, 0).unwrap();
    assert!(blk[..page].iter().all(|&x| x == 9));
    assert!(blk[page..2 * page].iter().all(|&x| x == 1));
    assert!(blk[3 * page..4 * page].iter().all(|&x| x == 3));
    assert!(blk[4 * page..].iter().all(|&x| x == 0));
    // Growing past the base's length zero-fills the gap.
    let mut blk = vec![7u8; 8 * page];
    d.apply(&mut blk, page, 0).unwrap();
    assert!(blk[2 * page..3 * page].iter().all(|&x| x == 0));
    // Too long for the block.
    assert!(d.apply(&mut vec![0u8; 2 * page], 0, 0).is_err());
    // Every bad header field, length, order and range is an error, never a panic.
    // (Bytes 5 and 6 of the result length can flip to another valid length: the
    // record's data CRC catches those.)
    for i in (0..DELTA_HEADER_SIZE + 8).filter(|i| ![5, 6].contains(i)) {
        let mut c = b.clone();
        c[i] ^= 0x80;
        assert!(DeltaPayload::decode(&c, 0).is_err(), "byte {i}");
    }
    for n in 0..b.len() {
        assert!(DeltaPayload::decode(&b[..n], 0).is_err());
    }
    let unsorted = DeltaPayload::encode(4 * PAGE as u32, &[(3, &p3), (1, &p1)]);
    assert!(DeltaPayload::decode(&unsorted, 0).is_err());
    let odd_len = DeltaPayload::encode(4 * PAGE as u32 + 1, &[]);
    assert!(DeltaPayload::decode(&odd_len, 0).is_err());
    assert!(DeltaPayload::decode(&DeltaPayload::encode(0, &[]), 0).is_ok());
}

#[test]
fn delta_record_headers_follow_their_rules() {
    let rh = RecordHeader {
        key: Key::Block { array: 1, blk: 2 },
        encoding: Encoding::DeltaRaw,
        flags: 0,
        pad: 0,
        prev_off: 4096,
        logical_len: 16,
        stored_len: 16,
        data_crc: 5,
    };
    let b = rh.encode();
    assert_eq!(b[0], TAG_DELTA);
    assert_eq!(RecordHeader::decode(&b, 8192).unwrap(), rh);
    // The base must lie before the record, a delta is never padded, holds its header.
    assert!(RecordHeader::decode(&b, 4096).is_err());
    for bad in [
        RecordHeader { prev_off: 0, ..rh },
        RecordHeader { pad: 8, ..rh },
        RecordHeader {
            logical_len: 8,
            stored_len: 8,
            ..rh
        },
        RecordHeader {
            encoding: Encoding::DeltaZstd,
            stored_len: 17,
            ..rh
        },
    ] {
        assert!(
            RecordHeader::decode(&bad.encode(), 8192).is_err(),
            "{bad:?}"
        );
    }
}

#[test]
fn page_crc_tables_combine_roundtrip_and_reject_corruption() {
    for len in [0usize, 100, 4096, 4097, 3 * 4096, 2 << 20] {
        let data: Vec<u8> = (0..len).map(|i| (i * 7 + i / 4096) as u8).collect();
        let (crcs, whole) = page_crcs(&data);
        assert_eq!(whole, crate::verify::crc32(&data), "len {len}");
        assert_eq!(combine_page_crcs(&crcs, len as u32), whole);
        assert_eq!(crcs.len() as u64, (len as u64).div_ceil(PAGE as u64));
        let t = encode_page_table(&crcs);
        assert_eq!(t.len() as u64, page_table_len(FLAG_PAGE_CRCS, len as u32));
        assert_eq!(decode_page_table(&t, len as u32, 0).unwrap(), crcs);
        for bit in [0, t.len() * 8 - 1, t.len() * 4] {
            let mut bad = t.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            assert!(decode_page_table(&bad, len as u32, 0).is_err());
        }
    }
    assert_eq!(page_table_len(0, 1 << 30), 0);
    assert_eq!(page_table_len(FLAG_PAGE_CRCS, 1 << 30), (1 << 20) + 4);
}

#[test]
fn raw_records_with_page_tables_align_and_check() {
    let data: Vec<u8> = (0..3 * 4096).map(|i| (i % 251) as u8).collect();
    let (crcs, whole) = page_crcs(&data);
    let recs = [RecordIn {
        key: Key::Block { array: 1, blk: 0 },
        encoding: Encoding::Raw,
        flags: 0,
        prev_off: 0,
        logical_len: data.len() as u32,
        payload: PayloadSrc::Mem(&data),
        data_crc: whole,
        page_crcs: Some(TableSrc::Crcs(&crcs)),
    }];
    let tx = encode_tx(4096, Tid(1), 1, "u", "d", &recs).unwrap();
    let bytes: Vec<u8> = tx.to_bytes();
    let rh = tx.headers[0];
    assert_eq!(rh.flags, FLAG_PAGE_CRCS);
    let at = (tx.record_offsets[0] - 4096) as usize;
    assert_eq!((4096 + at as u64 + rh.payload_rel()) % PAGE as u64, 0);
    let t0 = at + RECORD_HEADER_SIZE;
    let table = &bytes[t0..t0 + rh.table_len() as usize];
    let p0 = at + rh.payload_rel() as usize;
    let payload = &bytes[p0..p0 + data.len()];
    assert_eq!(payload, &data[..]);
    check_payload(&rh, 0, table, payload).unwrap();
    let mut bad = payload.to_vec();
    bad[5000] ^= 1;
    let e = check_payload(&rh, 0, table, &bad).unwrap_err().to_string();
    assert!(e.contains("page 1"), "{e}");
    let mut badt = table.to_vec();
    badt[2] ^= 1;
    let e = check_payload(&rh, 0, &badt, payload)
        .unwrap_err()
        .to_string();
    assert!(e.contains("table"), "{e}");
    // A wrong number of page CRCs is refused by the writer; the flag only on raw B.
    let mut r2 = recs.clone();
    r2[0].page_crcs = Some(TableSrc::Crcs(&crcs[..2]));
    assert!(encode_tx(4096, Tid(1), 1, "", "", &r2).is_err());
    let mut h = rh;
    h.encoding = Encoding::Zstd;
    h.pad = 0;
    assert!(RecordHeader::decode(&h.encode(), 0).is_err());
}

#[test]
fn decoders_never_panic_on_short_or_garbage_input() {
    for n in 0..64 {
        let b = vec![0xA5u8; n];
        let _ = FileHeader::decode(&b);
        let _ = TxHeader::decode(&b, 0);
        let _ = RecordHeader::decode(&b, 0);
        let _ = TxEnd::decode(&b, 0, Some(crate::verify::Crc32::new()));
        let _ = DeltaPayload::decode(&b, 0);
    }
}
