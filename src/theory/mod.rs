//! Theory layer: spectral quantities and the bounds of Soen & Sun (2024) (MATH §5, §7).
