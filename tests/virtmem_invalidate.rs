//! Proves invalidate: a clean block reloads, a dirty block's changes are dropped, a
//! load in flight throws its data away (the faulting reader sees the new content), and
//! a load or store that takes a lock held by the invalidating thread does not deadlock.

mod virtmem_util;

use std::sync::{Arc, Barrier};
use std::time::Duration;

use parking_lot::Mutex;
use virtmem_util::*;

#[test]
fn invalidate_clean_block_reloads_new_content() {
    let (_vm, f, h) = setup(8, false);
    let m = h.mmap(0, 4).unwrap();
    assert_eq!(rd(&m, BS), pattern(1));
    f.set_block(1, &[200; 16]).unwrap();
    assert_eq!(rd(&m, BS), pattern(1), "still the old copy");
    h.invalidate(1);
    assert_eq!(rd(&m, BS), 200);
    assert_eq!(f.load_count(1), 2);
    h.invalidate(3); // never loaded: nothing happens
    h.invalidate(1 << 40); // far outside: nothing happens
}

#[test]
fn invalidate_dirty_block_drops_its_changes() {
    let (vm, _f, h) = setup(8, false);
    let m = h.mmap(0, 4).unwrap();
    wr(&m, 2 * BS, 99);
    h.invalidate(2);
    assert!(h.dirty_blocks().is_empty());
    assert_eq!(vm.stats().dirty, 0);
    assert_eq!(rd(&m, 2 * BS), pattern(2));
}

#[test]
fn invalidate_during_a_load_discards_the_loaded_data() {
    let (_vm, f, h) = setup(8, false);
    let h = Arc::new(h);
    let m = Arc::new(h.mmap(0, 4).unwrap());
    let entered = Arc::new(Barrier::new(2));
    let release = Arc::new(Barrier::new(2));
    let first = Arc::new(std::sync::atomic::AtomicBool::new(true));
    {
        let (entered, release, first) = (entered.clone(), release.clone(), first.clone());
        f.set_load_hook(Some(Arc::new(move |_blk| {
            if first.swap(false, std::sync::atomic::Ordering::SeqCst) {
                entered.wait();
                release.wait();
            }
        })));
    }
    let reader = {
        let m = m.clone();
        std::thread::spawn(move || rd(&m, BS + 3))
    };
    entered.wait(); // the first load of block 1 is in flight, reading old content
    f.set_block(1, &[55; BS]).unwrap_or(());
    h.invalidate(1);
    release.wait();
    assert_eq!(
        reader.join().unwrap(),
        55,
        "the reader sees the content after invalidate"
    );
    assert_eq!(
        f.load_count(1),
        2,
        "the invalidated load was thrown away and redone"
    );
}

#[test]
fn unmap_and_close_are_refused_while_a_load_is_in_flight() {
    let (_vm, f, h) = setup(8, false);
    let m = h.mmap(0, 4).unwrap();
    let entered = Arc::new(Barrier::new(2));
    let release = Arc::new(Barrier::new(2));
    {
        let (entered, release) = (entered.clone(), release.clone());
        f.set_load_hook(Some(Arc::new(move |_| {
            entered.wait();
            release.wait();
        })));
    }
    // A thread faults through a raw address (as code behind a view would).
    let addr = m.as_ptr() as usize;
    // SAFETY: `m` outlives the thread (joined below before `m` is unmapped).
    let reader = std::thread::spawn(move || unsafe { std::ptr::read_volatile(addr as *const u8) });
    entered.wait();
    let (m, e) = m.unmap().unwrap_err();
    assert!(matches!(e, wdb::Error::Busy(_)), "{e}");
    let (h, e) = h.close().unwrap_err();
    assert!(matches!(e, wdb::Error::Busy(_)), "{e}");
    let other = h.mmap(0, 1).unwrap();
    other.unmap().unwrap(); // a mapping with nothing in flight unmaps
    release.wait();
    assert_eq!(reader.join().unwrap(), pattern(0));
    f.set_load_hook(None);
    m.unmap().unwrap();
    h.close().unwrap();
}

#[test]
fn load_taking_a_lock_held_by_the_invalidating_thread_does_not_deadlock() {
    let (_vm, f, h) = setup(8, false);
    let h = Arc::new(h);
    let m = Arc::new(h.mmap(0, 4).unwrap());
    let user_lock = Arc::new(Mutex::new(()));
    {
        let user_lock = user_lock.clone();
        f.set_load_hook(Some(Arc::new(move |_| {
            let _g = user_lock.lock();
        })));
    }
    let g = user_lock.lock(); // this thread holds the lock the load needs
    let reader = {
        let m = m.clone();
        std::thread::spawn(move || rd(&m, 0))
    };
    std::thread::sleep(Duration::from_millis(50)); // the load is now blocked on user_lock
    h.invalidate(0); // must not wait for the load
    drop(g);
    assert_eq!(reader.join().unwrap(), pattern(0));
}

#[test]
fn store_taking_a_lock_held_by_the_invalidating_thread_does_not_deadlock() {
    let (_vm, f, h) = setup(8, false);
    let h = Arc::new(h);
    let m = h.mmap(0, 4).unwrap();
    wr(&m, 0, 1);
    wr(&m, BS, 2);
    let user_lock = Arc::new(Mutex::new(()));
    {
        let user_lock = user_lock.clone();
        f.set_store_hook(Some(Arc::new(move |_| {
            let _g = user_lock.lock();
        })));
    }
    let g = user_lock.lock();
    let writer = {
        let h = h.clone();
        std::thread::spawn(move || h.writeout())
    };
    std::thread::sleep(Duration::from_millis(50)); // the store of block 0 is blocked
    h.invalidate(0); // must not wait for the store
    h.discard(); // nor must discard
    drop(g);
    writer.join().unwrap().unwrap();
    assert!(h.dirty_blocks().is_empty());
    assert_eq!(
        rd(&m, 0),
        pattern(0),
        "block 0 was invalidated: reloads from the file"
    );
    drop(m);
}
