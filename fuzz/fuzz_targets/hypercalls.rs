//! Guest-driven hypercall sequences over three domains, with guest-memory scribbles, host-side
//! raises and domain life-cycle changes; see `xen_evtchn::test_utils::run_hypercalls`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    xen_evtchn::test_utils::run_hypercalls(data);
});
