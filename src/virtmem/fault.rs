//! The SIGSEGV handler: turns an access to a not-yet-resident block of a view into a
//! load (or a dirty mark) and resumes the faulting instruction.
//!
//! Written like a device driver:
//! - **Classification allocates nothing and takes no lock**: registered view ranges
//!   live in a fixed-size table of seqlock-protected slots ([`TABLE`]), written under
//!   [`REGISTRY`] outside the handler and read with atomics inside it.
//! - **Faults that are not ours are chained** to the handler that was installed before
//!   ours (Rust's stack-overflow handler, Python's `faulthandler`, or the default
//!   action), so a real segfault still kills the process and a stack overflow still
//!   prints Rust's message. Only faults the kernel raised for an access can be ours:
//!   a `SIGSEGV` sent with `kill`/`raise` (`si_code <= 0`) carries no address and is
//!   always chained.
//! - **Ours stays on top**: another library may install its own `SIGSEGV` handler after
//!   ours (Python's `faulthandler.enable()` does), which would then see wdb's ordinary
//!   page faults first and take them for crashes. [`ensure_installed`], run whenever a
//!   range is registered (and by bindings before they hand out memory), puts ours back
//!   on top and chains to the displacing handler. Such a handler usually chains to
//!   what it displaced (ours) by reinstalling it and re-raising the signal; so the
//!   handlers ours found below it form a stack ([`PREV`]), and a non-wdb fault that
//!   comes back into our handler while the same thread is already chaining it
//!   (`CHAIN_DEPTH`) goes one level further down, as if each displacing handler sat
//!   between ours and the one below it. A real segfault thus runs each handler once,
//!   newest first, and ends in the default action.
//! - **No lock the faulting thread can already hold**: every wdb code path that takes
//!   the VM lock or [`REGISTRY`], or runs a `BigFile` load or store, sets the
//!   thread-local [`IN_WDB`] counter. A fault on a wdb range while it is set (a load
//!   that touches managed memory: a fault inside a fault) is reported and aborts
//!   instead of deadlocking.
//! - **errno is kept**; read vs write comes from the CPU's fault information (x86-64:
//!   page-fault error code bit 1; aarch64: ESR WnR bit from the signal frame).
//! - **One way to stop**: a condition virtmem cannot recover from (a fault it cannot
//!   serve, a panic while serving one, a view mapping the kernel refuses to restore) ends
//!   in [`fatal`], which writes one message to stderr with `write(2)` from a stack
//!   buffer and aborts: no allocation, no lock, so it is safe inside the handler.
//! - **The service runs on the interrupted thread's own stack**, not on the small
//!   alternate signal stack (8 KiB for Rust threads), because it runs `BigFile::load_blk`,
//!   which may need more.
//!
//! Lock order: the VM lock (`VmShared::state`) may be held when [`REGISTRY`] is taken,
//! never the reverse. The handler takes [`REGISTRY`] and the VM lock one after the
//! other, never both.
#![allow(unsafe_code)]

use std::cell::{Cell, UnsafeCell};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::mem::MaybeUninit;
use std::sync::atomic::{fence, AtomicI32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Once, Weak};

use parking_lot::Mutex;

use crate::{Error, Result};

/// Whether [`is_write`] reads the access kind from the CPU on this target. Where it
/// does not, a fault on a block that is already mapped (read-only) is taken as a write.
pub(super) const WRITE_BIT_KNOWN: bool = cfg!(any(
    all(target_arch = "x86_64", target_env = "gnu"),
    all(target_arch = "aarch64", target_env = "gnu")
));

/// What the handler calls for a fault inside a registered range.
pub(super) trait FaultTarget: Send + Sync {
    /// Make the byte at `addr` accessible (writable if `write`). `Ok(false)`: the range
    /// is not served by this process after all (a forked child): chain the fault.
    fn service(&self, addr: usize, write: bool) -> Result<bool>;
}

/// Most view ranges registered at once in one process.
pub(super) const MAX_RANGES: usize = 4096;

/// One registered range. `seq` is odd while a writer changes the slot; a reader that
/// sees the same even `seq` before and after reading the fields read a consistent slot.
struct RangeSlot {
    seq: AtomicU64,
    start: AtomicUsize,
    /// Exclusive end; 0 = free slot.
    end: AtomicUsize,
    id: AtomicU64,
}

#[allow(clippy::declare_interior_mutable_const)]
const EMPTY_SLOT: RangeSlot = RangeSlot {
    seq: AtomicU64::new(0),
    start: AtomicUsize::new(0),
    end: AtomicUsize::new(0),
    id: AtomicU64::new(0),
};

static TABLE: [RangeSlot; MAX_RANGES] = [EMPTY_SLOT; MAX_RANGES];
/// Slots at or above this index are all free: the handler scans only below it.
static HIGH: AtomicUsize = AtomicUsize::new(0);
/// The process that registered the ranges: a forked child chains every fault.
static OWNER_PID: AtomicI32 = AtomicI32::new(0);
/// This process's id, cached (0 until [`process_id`] first runs): a `getpid` system
/// call in every fault and every VM-lock acquisition is measurable beside a fault's
/// handful of other calls. A `pthread_atfork` child handler, registered before the
/// first caching, stores the child's own id, so the cache is right after `fork`.
static PID: AtomicI32 = AtomicI32::new(0);
static PID_INIT: Once = Once::new();

extern "C" fn pid_after_fork() {
    // SAFETY: getpid is async-signal-safe (the child of a fork may only call those).
    PID.store(unsafe { libc::getpid() }, Ordering::Relaxed);
}

/// This process's id, without a system call after the first one.
pub(super) fn process_id() -> u32 {
    PID_INIT.call_once(|| {
        // SAFETY: registers a handler that only stores getpid() in an atomic; a failure
        // (ENOMEM) leaves PID at 0 below, and every call then asks the kernel.
        let r = unsafe { libc::pthread_atfork(None, None, Some(pid_after_fork)) };
        if r == 0 {
            // SAFETY: getpid has no preconditions.
            PID.store(unsafe { libc::getpid() }, Ordering::Relaxed);
        }
    });
    match PID.load(Ordering::Relaxed) {
        0 => std::process::id(),
        p => p as u32,
    }
}

/// Writer side of the table, and the live targets by range id. Taken outside the
/// handler's classification step; see the lock order in the module doc.
static REGISTRY: Mutex<Registry> = Mutex::new(Registry {
    targets: BTreeMap::new(),
});

struct Registry {
    /// range id → (table slot, target)
    targets: BTreeMap<u64, (usize, Weak<dyn FaultTarget>)>,
}

thread_local! {
    /// > 0 while this thread runs wdb code that holds a wdb lock or runs a BigFile
    /// load/store (const-initialised, no destructor: safe to read in a signal handler).
    static IN_WDB: Cell<u32> = const { Cell::new(0) };
}

/// Marks the current thread as running wdb code for as long as it lives.
pub(super) struct InWdb(());

impl InWdb {
    pub(super) fn enter() -> InWdb {
        IN_WDB.with(|c| c.set(c.get() + 1));
        InWdb(())
    }
}

impl Drop for InWdb {
    fn drop(&mut self) {
        IN_WDB.with(|c| c.set(c.get() - 1));
    }
}

impl std::fmt::Debug for InWdb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("InWdb")
    }
}

/// Register `[start, start+len)` as served by `target`, installing the handler on
/// first use. Returns nothing; `id` names the range in [`unregister`].
pub(super) fn register(
    id: u64,
    start: usize,
    len: usize,
    target: Weak<dyn FaultTarget>,
) -> Result<()> {
    ensure_installed()?;
    let _w = InWdb::enter();
    let mut reg = REGISTRY.lock();
    let Some(idx) = (0..MAX_RANGES).find(|&i| TABLE[i].end.load(Ordering::Relaxed) == 0) else {
        return Err(Error::Busy(format!(
            "too many views mapped at once (at most {MAX_RANGES} per process)"
        )));
    };
    OWNER_PID.store(process_id() as i32, Ordering::Relaxed);
    let s = &TABLE[idx];
    let seq = s.seq.load(Ordering::Relaxed);
    s.seq.store(seq + 1, Ordering::Relaxed);
    fence(Ordering::Release);
    s.start.store(start, Ordering::Relaxed);
    s.id.store(id, Ordering::Relaxed);
    s.end.store(start + len, Ordering::Relaxed);
    s.seq.store(seq + 2, Ordering::Release);
    if idx >= HIGH.load(Ordering::Relaxed) {
        HIGH.store(idx + 1, Ordering::Release);
    }
    reg.targets.insert(id, (idx, target));
    Ok(())
}

/// Forget a range; faults on it are chained from now on.
pub(super) fn unregister(id: u64) {
    let _w = InWdb::enter();
    let mut reg = REGISTRY.lock();
    if let Some((idx, _)) = reg.targets.remove(&id) {
        let s = &TABLE[idx];
        let seq = s.seq.load(Ordering::Relaxed);
        s.seq.store(seq + 1, Ordering::Relaxed);
        fence(Ordering::Release);
        s.end.store(0, Ordering::Relaxed);
        s.start.store(0, Ordering::Relaxed);
        s.id.store(0, Ordering::Relaxed);
        s.seq.store(seq + 2, Ordering::Release);
    }
}

/// Range id containing `addr`, lock-free and allocation-free.
fn lookup(addr: usize) -> Option<u64> {
    let high = HIGH.load(Ordering::Acquire).min(MAX_RANGES);
    for s in &TABLE[..high] {
        loop {
            let s1 = s.seq.load(Ordering::Acquire);
            if s1 & 1 == 1 {
                std::hint::spin_loop();
                continue;
            }
            let start = s.start.load(Ordering::Relaxed);
            let end = s.end.load(Ordering::Relaxed);
            let id = s.id.load(Ordering::Relaxed);
            fence(Ordering::Acquire);
            if s.seq.load(Ordering::Relaxed) != s1 {
                continue;
            }
            if end != 0 && addr >= start && addr < end {
                return Some(id);
            }
            break;
        }
    }
    None
}

/// Most handlers [`PREV`] records: the one found at the first installation, then one
/// per displacement.
const MAX_PREV: usize = 16;
/// No slot (below the oldest).
const NO_SLOT: usize = usize::MAX;

/// The handlers found installed where ours went, one slot per (re)installation: slot 0
/// what was there when wdb first installed its handler, each later slot the handler
/// that had displaced ours when [`ensure_installed`] put ours back on top. A slot is
/// written once, before [`PREV_TOP`] names it, and never again; `below[i]` is the slot
/// a fault chained through slot `i` continues to.
struct PrevActions {
    actions: [UnsafeCell<MaybeUninit<libc::sigaction>>; MAX_PREV],
    below: [AtomicUsize; MAX_PREV],
}
// SAFETY: each slot of `actions` is written once under INSTALL_LOCK before PREV_TOP
// (release) makes it reachable, and only read (after an acquire of PREV_TOP) afterwards.
unsafe impl Sync for PrevActions {}
#[allow(clippy::declare_interior_mutable_const)]
const NO_ACTION: UnsafeCell<MaybeUninit<libc::sigaction>> = UnsafeCell::new(MaybeUninit::uninit());
#[allow(clippy::declare_interior_mutable_const)]
const NO_BELOW: AtomicUsize = AtomicUsize::new(NO_SLOT);
static PREV: PrevActions = PrevActions {
    actions: [NO_ACTION; MAX_PREV],
    below: [NO_BELOW; MAX_PREV],
};
/// 1 + the newest slot of [`PREV`] (the handler ours chains to first); 0 before the
/// first installation.
static PREV_TOP: AtomicUsize = AtomicUsize::new(0);
/// Slots of [`PREV`] written (changed only under [`INSTALL_LOCK`]).
static PREV_LEN: AtomicUsize = AtomicUsize::new(0);
/// Serialises installations (never taken in the handler).
static INSTALL_LOCK: Mutex<()> = Mutex::new(());

thread_local! {
    /// How many times this thread's fault is being chained right now: a non-wdb fault
    /// that re-enters the handler from a chained handler goes one slot further down
    /// (const-initialised, no destructor: safe in a signal handler).
    static CHAIN_DEPTH: Cell<u32> = const { Cell::new(0) };
}

fn our_action() -> libc::sigaction {
    // SAFETY: an all-zero sigaction is a valid value (no handler, no flags); the
    // fields that matter are set below.
    let mut sa: libc::sigaction = unsafe { std::mem::zeroed() };
    sa.sa_sigaction = handler as *const () as usize;
    // SA_NODEFER: a fault inside the service (a load touching managed memory) reaches
    // this handler, which reports it, instead of the kernel killing the process
    // silently because SIGSEGV is blocked; a chained handler that re-raises the signal
    // reaches it again too.
    sa.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK | libc::SA_NODEFER;
    // SAFETY: sa_mask is a valid sigset_t owned by `sa`.
    unsafe { libc::sigemptyset(&mut sa.sa_mask) };
    sa
}

/// Install wdb's `SIGSEGV` handler, or put it back on top if another handler displaced
/// it since, chaining faults that are not wdb's to that handler (see the module docs).
/// Cheap when ours is on top: one `sigaction` call. [`Error::Busy`] after
/// `MAX_PREV - 1` displacements; [`Error::Io`] if the system refuses.
pub(crate) fn ensure_installed() -> Result<()> {
    let ours = handler as *const () as usize;
    let query = || {
        // SAFETY: an all-zero sigaction is a valid out-buffer.
        let mut cur: libc::sigaction = unsafe { std::mem::zeroed() };
        // SAFETY: querying the current action into a valid buffer.
        if unsafe { libc::sigaction(libc::SIGSEGV, std::ptr::null(), &mut cur) } != 0 {
            return Err(Error::Io(std::io::Error::last_os_error()));
        }
        Ok(cur)
    };
    // The common case without the lock: ours is on top (it is recorded before it is
    // installed, so PREV_TOP > 0 then).
    if query()?.sa_sigaction == ours && PREV_TOP.load(Ordering::Acquire) > 0 {
        return Ok(());
    }
    let _w = InWdb::enter();
    let _g = INSTALL_LOCK.lock();
    let mut cur = query()?;
    let top = PREV_TOP.load(Ordering::Acquire);
    if cur.sa_sigaction == ours && top > 0 {
        return Ok(());
    }
    let n = PREV_LEN.load(Ordering::Relaxed);
    if n >= MAX_PREV {
        return Err(Error::Busy(format!(
            "the SIGSEGV handler was replaced by other code {} times; wdb cannot serve \
             its page faults any more",
            MAX_PREV - 1
        )));
    }
    if cur.sa_sigaction == ours {
        // Installed by an earlier copy of this code that did not record what it found
        // (cannot happen in one binary): chain to the default action.
        cur.sa_sigaction = libc::SIG_DFL;
    }
    // The slot below the new one: the current top, unless the displacing handler is
    // recorded already (it was removed and installed again): then the one below that
    // record, skipping the stale slots above it.
    let mut below = top.checked_sub(1).unwrap_or(NO_SLOT);
    let mut i = below;
    while i != NO_SLOT {
        // SAFETY: slot i was reached from PREV_TOP, so it was written (once) before.
        let a = unsafe { (*PREV.actions[i].get()).assume_init_ref() };
        if a.sa_sigaction == cur.sa_sigaction && cur.sa_sigaction != libc::SIG_DFL {
            below = PREV.below[i].load(Ordering::Relaxed);
            break;
        }
        i = PREV.below[i].load(Ordering::Relaxed);
    }
    // SAFETY: slot n is not reachable yet (PREV_TOP <= n), so no handler reads it, and
    // INSTALL_LOCK keeps other writers out.
    unsafe { (*PREV.actions[n].get()).write(cur) };
    PREV.below[n].store(below, Ordering::Relaxed);
    PREV_LEN.store(n + 1, Ordering::Relaxed);
    PREV_TOP.store(n + 1, Ordering::Release);
    let sa = our_action();
    // SAFETY: installing a valid action; the handler it names reads PREV_TOP, set above.
    if unsafe { libc::sigaction(libc::SIGSEGV, &sa, std::ptr::null_mut()) } != 0 {
        return Err(Error::Io(std::io::Error::last_os_error()));
    }
    Ok(())
}

/// A message buffer on the stack: formatting into it never allocates; text past its
/// end is cut.
struct StackBuf {
    buf: [u8; 1024],
    len: usize,
}

impl std::fmt::Write for StackBuf {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let n = s.len().min(self.buf.len() - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}

/// Print `wdb: fatal: <msg>` to stderr and abort the process: the one way virtmem
/// stops on a condition it cannot recover from (a fault it cannot serve, a mapping it
/// cannot restore). Safe in the signal handler and anywhere else: the message is
/// formatted into a buffer on the stack (cut at 1 KiB), written with one `write(2)`,
/// and `abort(3)` follows; no allocation, no lock (`eprintln!` would take stderr's).
pub(super) fn fatal(args: std::fmt::Arguments<'_>) -> ! {
    let mut b = StackBuf {
        buf: [0; 1024],
        len: 0,
    };
    let _ = b.write_str("wdb: fatal: ");
    let _ = b.write_fmt(args);
    let _ = b.write_str("\n");
    // SAFETY: write(2) and abort(3) are async-signal-safe; the buffer is valid.
    unsafe {
        libc::write(2, b.buf.as_ptr().cast(), b.len);
        libc::abort();
    }
}

fn errno_ptr() -> *mut libc::c_int {
    // SAFETY: returns this thread's errno location; always valid.
    unsafe { libc::__errno_location() }
}

extern "C" fn handler(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // SAFETY: errno_ptr is valid for this thread.
    let saved_errno = unsafe { *errno_ptr() };
    // SAFETY: the kernel passes a valid siginfo for a SA_SIGINFO handler.
    let (code, addr) = unsafe { ((*info).si_code, (*info).si_addr() as usize) };
    // si_code <= 0: sent by kill/raise/sigqueue, not an access; si_addr is not set.
    let ours = (code > 0).then(|| lookup(addr)).flatten().filter(|_| {
        // PID was cached by `register` before any range was (a child of fork has its
        // own id there); getpid is async-signal-safe for the uncached case.
        let pid = match PID.load(Ordering::Relaxed) {
            // SAFETY: getpid has no preconditions.
            0 => unsafe { libc::getpid() },
            p => p,
        };
        pid == OWNER_PID.load(Ordering::Relaxed)
    });
    match ours {
        None => {
            // SAFETY: forwarding the kernel's own arguments to the previous handler.
            unsafe { chain(sig, info, ctx) }
        }
        Some(id) => {
            if IN_WDB.with(|c| c.get()) > 0 {
                fatal(format_args!(
                    "page fault at {addr:#x} on wdb-managed memory while this thread runs wdb \
                     code (a BigFile load or store touched a wdb view: fault inside a fault)"
                ));
            }
            // SAFETY: ctx is the ucontext the kernel passed for this signal.
            let write = unsafe { is_write(ctx) };
            let mut job = Job {
                id,
                addr,
                write,
                chain: false,
            };
            // SAFETY: ctx is valid; run_job is a plain extern "C" fn taking `job`.
            unsafe { run_on_thread_stack(ctx, &mut job) };
            if job.chain {
                // SAFETY: as above.
                unsafe { chain(sig, info, ctx) }
            }
        }
    }
    // SAFETY: errno_ptr is valid for this thread.
    unsafe { *errno_ptr() = saved_errno };
}

/// The work of one fault, passed to [`run_job`] through a raw pointer.
struct Job {
    id: u64,
    addr: usize,
    write: bool,
    /// Out: the range turned out not to be ours; chain the fault.
    chain: bool,
}

extern "C" fn run_job(job: *mut Job) {
    // SAFETY: `job` points to the Job on the handler's frame, alive during this call.
    let job = unsafe { &mut *job };
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| serve(job)));
    if r.is_err() {
        fatal(format_args!(
            "panic while serving a page fault at {:#x}",
            job.addr
        ));
    }
}

fn serve(job: &mut Job) {
    let target = {
        let _w = InWdb::enter();
        let reg = REGISTRY.lock();
        reg.targets.get(&job.id).and_then(|(_, w)| w.upgrade())
    };
    let Some(target) = target else {
        job.chain = true;
        return;
    };
    let _w = InWdb::enter();
    match target.service(job.addr, job.write) {
        Ok(true) => {}
        Ok(false) => job.chain = true,
        Err(e) => fatal(format_args!(
            "cannot serve the page fault at {:#x} ({}): {e}",
            job.addr,
            if job.write { "write" } else { "read" }
        )),
    }
    drop(target);
}

/// Call `run_job(job)` on the interrupted thread's stack when the handler runs on an
/// alternate signal stack, else directly.
///
/// Which stack the handler runs on is read from its own stack pointer, not asked of the
/// kernel (`sigaltstack` would be a system call in every fault): without a switch the kernel
/// builds the signal frame right below the interrupted stack pointer (past the red
/// zone), so this function's frame lies less than [`FRAME_MAX`] below it; on an
/// alternate stack it lies elsewhere (an alternate stack in the free space just below
/// the interrupted code's stack pointer would be overwritten by that code's own calls,
/// so none is there). A handler interrupting code that already ran on the alternate
/// stack finds itself just below it, and runs there.
///
/// # Safety
/// `ctx` is the ucontext of the current signal.
unsafe fn run_on_thread_stack(ctx: *mut libc::c_void, job: *mut Job) {
    // SAFETY: contract of this fn.
    let sp = unsafe { interrupted_sp(ctx) };
    let marker = 0u8;
    let here = std::hint::black_box(&marker as *const u8 as usize);
    match sp {
        // Switch only when we are not on the interrupted stack: then that stack below
        // its stack pointer (past the red zone) is free, and our own frames are
        // elsewhere.
        Some(sp) if !(here < sp && sp - here < FRAME_MAX) => {
            let new_sp = (sp - 1024) & !63;
            // SAFETY: new_sp is on the interrupted thread's stack below everything in
            // use there (the interrupted frame's red zone is 128 bytes, we skip 1 KiB);
            // run_job is an extern "C" fn that does not unwind (catch_unwind inside).
            unsafe { call_on_stack(new_sp, job) }
        }
        _ => run_job(job),
    }
}

/// Bound on the signal frame plus the handler's frames below the interrupted stack
/// pointer when the kernel did not switch stacks (the largest x86-64 frame, with AMX
/// state, is about 11 KiB).
const FRAME_MAX: usize = 64 << 10;

#[cfg(target_arch = "x86_64")]
unsafe fn call_on_stack(sp: usize, job: *mut Job) {
    // SAFETY: (caller) sp is a 64-byte aligned free stack area; r12 is callee-saved by
    // the C ABI so it survives the call and restores our stack pointer.
    unsafe {
        std::arch::asm!(
            "mov r12, rsp",
            "mov rsp, {sp}",
            "call {f}",
            "mov rsp, r12",
            sp = in(reg) sp,
            f = in(reg) run_job as extern "C" fn(*mut Job),
            in("rdi") job,
            out("r12") _,
            clobber_abi("C"),
        );
    }
}

#[cfg(target_arch = "aarch64")]
unsafe fn call_on_stack(sp: usize, job: *mut Job) {
    // SAFETY: (caller) sp is a 64-byte aligned free stack area; x20 is callee-saved by
    // the C ABI so it survives the call and restores our stack pointer.
    unsafe {
        std::arch::asm!(
            "mov x20, sp",
            "mov sp, {sp}",
            "blr {f}",
            "mov sp, x20",
            sp = in(reg) sp,
            f = in(reg) run_job as extern "C" fn(*mut Job),
            in("x0") job,
            out("x20") _,
            clobber_abi("C"),
        );
    }
}

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
unsafe fn call_on_stack(_sp: usize, job: *mut Job) {
    run_job(job)
}

/// The interrupted stack pointer.
///
/// # Safety
/// `ctx` is the ucontext of the current signal.
unsafe fn interrupted_sp(ctx: *mut libc::c_void) -> Option<usize> {
    let uc = ctx as *const libc::ucontext_t;
    #[cfg(all(target_arch = "x86_64", target_env = "gnu"))]
    {
        // SAFETY: contract: uc is the kernel's ucontext.
        Some(unsafe { (*uc).uc_mcontext.gregs[libc::REG_RSP as usize] } as usize)
    }
    #[cfg(all(target_arch = "aarch64", target_env = "gnu"))]
    {
        // SAFETY: contract: uc is the kernel's ucontext.
        Some(unsafe { (*uc).uc_mcontext.sp } as usize)
    }
    #[cfg(not(any(
        all(target_arch = "x86_64", target_env = "gnu"),
        all(target_arch = "aarch64", target_env = "gnu")
    )))]
    {
        let _ = uc;
        None
    }
}

/// Was the faulting access a write?
///
/// # Safety
/// `ctx` is the ucontext of the current signal.
unsafe fn is_write(ctx: *mut libc::c_void) -> bool {
    let uc = ctx as *const libc::ucontext_t;
    #[cfg(all(target_arch = "x86_64", target_env = "gnu"))]
    {
        // Page-fault error code, bit 1: the access was a write.
        // SAFETY: contract: uc is the kernel's ucontext.
        (unsafe { (*uc).uc_mcontext.gregs[libc::REG_ERR as usize] } & 2) != 0
    }
    #[cfg(all(target_arch = "aarch64", target_env = "gnu"))]
    {
        // The signal frame's __reserved area (offset 288 in mcontext_t, after
        // fault_address, regs[31], sp, pc, pstate, 16-aligned) holds records
        // {magic: u32, size: u32, ...}; ESR_MAGIC's carries the syndrome, whose WnR bit
        // (6) is set for writes by data aborts (EC 0x24/0x25).
        const ESR_MAGIC: u32 = 0x4553_5201;
        // SAFETY: contract: uc is the kernel's ucontext; we read only inside its 4 KiB
        // reserved area, bounded by `off + 16 <= 4096`.
        unsafe {
            let base = (&raw const (*uc).uc_mcontext as *const u8).add(288);
            let mut off = 0usize;
            while off + 16 <= 4096 {
                let magic = (base.add(off) as *const u32).read_unaligned();
                let size = (base.add(off + 4) as *const u32).read_unaligned() as usize;
                if magic == 0 || size < 8 {
                    break;
                }
                if magic == ESR_MAGIC {
                    let esr = (base.add(off + 8) as *const u64).read_unaligned();
                    let ec = (esr >> 26) & 0x3f;
                    return (ec == 0x24 || ec == 0x25) && esr & (1 << 6) != 0;
                }
                off += size;
            }
            false
        }
    }
    #[cfg(not(any(
        all(target_arch = "x86_64", target_env = "gnu"),
        all(target_arch = "aarch64", target_env = "gnu")
    )))]
    {
        // Unknown: a write to a block mapped read-only after this read fault faults
        // again and is then served as a write by the state machine's fallback.
        let _ = uc;
        false
    }
}

/// Hand a fault that is not ours to the handler installed below ours: the newest one in
/// [`PREV`] or, when this thread is already chaining a fault (the handler we chained to
/// re-raised it into ours), the one below that, and so on (see the module docs).
///
/// # Safety
/// The arguments are the current signal's.
unsafe fn chain(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    let depth = CHAIN_DEPTH.with(|c| c.get());
    let mut slot = PREV_TOP
        .load(Ordering::Acquire)
        .checked_sub(1)
        .unwrap_or(NO_SLOT);
    for _ in 0..depth {
        if slot == NO_SLOT {
            break;
        }
        slot = PREV.below[slot].load(Ordering::Relaxed);
    }
    let old = if slot == NO_SLOT {
        None
    } else {
        // SAFETY: slot was reached from PREV_TOP (acquire): written before, never again.
        Some(unsafe { (*PREV.actions[slot].get()).assume_init_ref() })
    };
    let h = old.map_or(libc::SIG_DFL, |o| o.sa_sigaction);
    if h == libc::SIG_DFL || h == libc::SIG_IGN {
        // Restore the default action and return: the instruction faults again and the
        // kernel applies it (core dump, death by SIGSEGV), as without wdb.
        // SAFETY: sigaction is async-signal-safe; `dfl` is a valid zeroed action.
        unsafe {
            let mut dfl: libc::sigaction = std::mem::zeroed();
            dfl.sa_sigaction = libc::SIG_DFL;
            libc::sigaction(sig, &dfl, std::ptr::null_mut());
        }
        return;
    }
    let siginfo = old.is_some_and(|o| o.sa_flags & libc::SA_SIGINFO != 0);
    CHAIN_DEPTH.with(|c| c.set(depth + 1));
    if siginfo {
        // SAFETY: the previous handler was installed with SA_SIGINFO, so it has this
        // signature.
        let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
            unsafe { std::mem::transmute(h) };
        f(sig, info, ctx)
    } else {
        // SAFETY: a handler installed without SA_SIGINFO has this signature.
        let f: extern "C" fn(libc::c_int) = unsafe { std::mem::transmute(h) };
        f(sig)
    }
    CHAIN_DEPTH.with(|c| c.set(depth));
}
