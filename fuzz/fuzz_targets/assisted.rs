#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| ferrogen_fuzz::assisted(data));
