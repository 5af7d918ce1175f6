//! Decoding an id from borrowed bytes allocates nothing when the id is short: the point of the
//! inline representation (rebuilding the state decodes several ids per event). Counted with a
//! global allocator that counts the allocations of the current thread only, so other tests'
//! threads do not disturb the count.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::string_slice
)] // test code

use ivrstate_model::*;
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

struct Counting;

thread_local! {
    // `const` and without a destructor: usable from inside the allocator.
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

// SAFETY: every method forwards to `System` with the caller's arguments unchanged; counting
// touches only a thread-local `Cell` (no allocation, no reentrancy).
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
        System.alloc(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let before = ALLOCATIONS.with(Cell::get);
    let out = f();
    (out, ALLOCATIONS.with(Cell::get) - before)
}

fn encode<T: serde::Serialize>(v: &T) -> Vec<u8> {
    bincode::serde::encode_to_vec(v, ivrstate_model::bincode_config()).unwrap()
}

fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> T {
    bincode::serde::decode_from_slice(bytes, ivrstate_model::bincode_config())
        .unwrap()
        .0
}

#[test]
fn short_ids_decode_without_allocating() {
    type Ids = (
        TServerName,
        Dn,
        Option<AgentId>,
        Option<Queue>,
        IvrName,
        PortNum,
    );
    let ids: Ids = (
        TServerName::from("TS_SIP_primary"),
        Dn::from("70001"),
        Some(AgentId::from("1001")),
        Some(Queue::from("8000")),
        IvrName::from("IVR_1"),
        PortNum::from("0001"),
    );
    let bytes = encode(&ids);
    let (back, n): (Ids, usize) = allocations(|| decode(&bytes));
    assert_eq!(back, ids);
    assert_eq!(n, 0, "decoding six short ids allocated {n} times");
}

#[test]
fn a_long_id_still_decodes_and_allocates_once() {
    // Over the 24 inline bytes: stored on the heap, one allocation (which also shows that the
    // counter counts).
    let long = Dn::from("sip:agent.with.a.long.address@example.invalid");
    let bytes = encode(&long);
    let (back, n): (Dn, usize) = allocations(|| decode(&bytes));
    assert_eq!(back, long);
    assert_eq!(
        back.as_str(),
        "sip:agent.with.a.long.address@example.invalid"
    );
    assert_eq!(n, 1);
}
