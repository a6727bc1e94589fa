//! What a harden keeps: the selection from reports and patterns (`select`), ELF dependencies
//! (`elf`), and the attack surface it names as removed (`surface`).

pub mod elf;
pub mod select;
pub mod surface;
