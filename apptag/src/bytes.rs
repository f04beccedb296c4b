//! Fixed-width integers read from byte slices: network headers are big-endian, capture
//! files are in their writer's byte order. `None` when the slice is too short, so outside
//! input can never index past its end.

#[inline(always)]
fn array<const N: usize>(d: &[u8], off: usize) -> Option<[u8; N]> {
    d.get(off..)?.first_chunk::<N>().copied()
}

#[inline(always)]
pub fn be16(d: &[u8], off: usize) -> Option<u16> {
    array(d, off).map(u16::from_be_bytes)
}

#[inline(always)]
pub fn be32(d: &[u8], off: usize) -> Option<u32> {
    array(d, off).map(u32::from_be_bytes)
}

#[inline(always)]
pub fn le32(d: &[u8], off: usize) -> Option<u32> {
    array(d, off).map(u32::from_le_bytes)
}

#[inline(always)]
pub fn le64(d: &[u8], off: usize) -> Option<u64> {
    array(d, off).map(u64::from_le_bytes)
}

/// A 16-bit field in the byte order of its file section.
#[inline(always)]
pub fn u16_at(d: &[u8], off: usize, big_endian: bool) -> Option<u16> {
    array(d, off).map(|a| {
        if big_endian {
            u16::from_be_bytes(a)
        } else {
            u16::from_le_bytes(a)
        }
    })
}

/// A 32-bit field in the byte order of its file section.
#[inline(always)]
pub fn u32_at(d: &[u8], off: usize, big_endian: bool) -> Option<u32> {
    array(d, off).map(|a| {
        if big_endian {
            u32::from_be_bytes(a)
        } else {
            u32::from_le_bytes(a)
        }
    })
}

/// A 64-bit field in the byte order of its file section.
#[inline(always)]
pub fn u64_at(d: &[u8], off: usize, big_endian: bool) -> Option<u64> {
    array(d, off).map(|a| {
        if big_endian {
            u64::from_be_bytes(a)
        } else {
            u64::from_le_bytes(a)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_both_orders_and_refuses_short_or_out_of_range() {
        let d = [1u8, 2, 3, 4, 5, 6, 7, 8, 9];
        assert_eq!(be16(&d, 1), Some(0x0203));
        assert_eq!(be32(&d, 0), Some(0x0102_0304));
        assert_eq!(le32(&d, 0), Some(0x0403_0201));
        assert_eq!(le64(&d, 1), Some(0x0908_0706_0504_0302));
        assert_eq!(u16_at(&d, 0, false), Some(0x0201));
        assert_eq!(u32_at(&d, 5, true), Some(0x0607_0809));
        assert_eq!(u64_at(&d, 0, true), Some(0x0102_0304_0506_0708));
        assert_eq!(be32(&d, 6), None);
        assert_eq!(be16(&d, usize::MAX), None);
        assert_eq!(u64_at(&d, 2, false), None);
    }
}
