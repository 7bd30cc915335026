//! FAT (FAT32 where the partition is large enough), written with `fatfs`.
