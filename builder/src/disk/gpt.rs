//! GPT partition table, written with the `gpt` crate.
