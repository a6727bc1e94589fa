//! What a harden keeps: the selection from reports and patterns (`select`), ELF dependencies
//! (`elf`), named include packs (`packs`), and the attack surface it names as removed (`surface`).

pub mod elf;
pub mod packs;
pub mod select;
pub mod surface;
