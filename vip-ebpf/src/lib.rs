//! Shared pieces of the vip XDP programs: bounds-checked packet access, header parsing
//! and the maps. Each program is a binary under `src/bin/`.
#![no_std]

pub mod maps;
pub mod parse;
pub mod ptr;
