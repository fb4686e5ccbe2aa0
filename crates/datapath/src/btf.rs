//! A small reader of the BTF carried by the compiled object: struct names, sizes and member
//! offsets, so that a test can compare them with the Rust mirrors in [`crate::abi`].

use crate::Error;

/// One member of a struct as the BTF describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    /// Member name.
    pub name: String,
    /// Byte offset.
    pub offset: usize,
    /// Byte size.
    pub size: usize,
}

/// A struct as the BTF describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Struct {
    /// Struct name (without `struct`).
    pub name: String,
    /// Size in bytes.
    pub size: usize,
    /// Members in order.
    pub members: Vec<Member>,
}

#[derive(Clone, Debug)]
struct Type {
    kind: u32,
    name_off: u32,
    size_or_type: u32,
    /// Struct members (name_off, type, offset in bits) or array (elem type, nelems).
    members: Vec<(u32, u32, u32)>,
    array: Option<(u32, u32)>,
}

fn bad(what: &str) -> Error {
    Error::Btf {
        detail: what.to_owned(),
    }
}

fn u16_at(b: &[u8], off: usize) -> Result<u16, Error> {
    b.get(off..off + 2)
        .map(|s| u16::from_le_bytes([s[0], s[1]]))
        .ok_or_else(|| bad("truncated"))
}

fn u32_at(b: &[u8], off: usize) -> Result<u32, Error> {
    b.get(off..off + 4)
        .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
        .ok_or_else(|| bad("truncated"))
}

fn u64_at(b: &[u8], off: usize) -> Result<u64, Error> {
    Ok(u64::from(u32_at(b, off)?) | (u64::from(u32_at(b, off + 4)?) << 32))
}

/// The bytes of the ELF section named `name` (ELF64, little endian).
pub fn elf_section<'a>(elf: &'a [u8], name: &str) -> Result<&'a [u8], Error> {
    if elf.get(0..4) != Some(b"\x7fELF".as_slice()) || elf.get(4) != Some(&2) {
        return Err(bad("not an ELF64 object"));
    }
    let shoff = u64_at(elf, 0x28)? as usize;
    let shentsize = usize::from(u16_at(elf, 0x3a)?);
    let shnum = usize::from(u16_at(elf, 0x3c)?);
    let shstrndx = usize::from(u16_at(elf, 0x3e)?);
    let header = |i: usize| -> Result<(u32, usize, usize), Error> {
        let h = shoff + i * shentsize;
        Ok((
            u32_at(elf, h)?,
            u64_at(elf, h + 0x18)? as usize,
            u64_at(elf, h + 0x20)? as usize,
        ))
    };
    let (_, stroff, strsize) = header(shstrndx)?;
    let strtab = elf
        .get(stroff..stroff + strsize)
        .ok_or_else(|| bad("section names out of bounds"))?;
    for i in 0..shnum {
        let (name_off, off, size) = header(i)?;
        let n = strtab
            .get(name_off as usize..)
            .and_then(|s| s.split(|b| *b == 0).next())
            .unwrap_or_default();
        if n == name.as_bytes() {
            return elf
                .get(off..off + size)
                .ok_or_else(|| bad("section out of bounds"));
        }
    }
    Err(bad(&format!("no section {name}")))
}

/// Every named struct in the `.BTF` section of an ELF object.
pub fn structs(elf: &[u8]) -> Result<Vec<Struct>, Error> {
    let btf = elf_section(elf, ".BTF")?;
    if u16_at(btf, 0)? != 0xeb9f {
        return Err(bad("bad BTF magic"));
    }
    let hdr_len = u32_at(btf, 4)? as usize;
    let type_off = hdr_len + u32_at(btf, 8)? as usize;
    let type_len = u32_at(btf, 12)? as usize;
    let str_off = hdr_len + u32_at(btf, 16)? as usize;
    let str_len = u32_at(btf, 20)? as usize;
    let strings = btf
        .get(str_off..str_off + str_len)
        .ok_or_else(|| bad("strings out of bounds"))?;
    let name = |off: u32| -> String {
        strings
            .get(off as usize..)
            .and_then(|s| s.split(|b| *b == 0).next())
            .map(|s| String::from_utf8_lossy(s).into_owned())
            .unwrap_or_default()
    };
    // Type ids start at 1.
    let mut types = vec![Type {
        kind: 0,
        name_off: 0,
        size_or_type: 0,
        members: Vec::new(),
        array: None,
    }];
    let mut off = type_off;
    let end = type_off + type_len;
    while off < end {
        let name_off = u32_at(btf, off)?;
        let info = u32_at(btf, off + 4)?;
        let size_or_type = u32_at(btf, off + 8)?;
        off += 12;
        let kind = (info >> 24) & 0x1f;
        let vlen = (info & 0xffff) as usize;
        let kind_flag = info >> 31 == 1;
        let mut t = Type {
            kind,
            name_off,
            size_or_type,
            members: Vec::new(),
            array: None,
        };
        match kind {
            1 | 14 | 17 => off += 4,
            3 => {
                t.array = Some((u32_at(btf, off)?, u32_at(btf, off + 8)?));
                off += 12;
            }
            4 | 5 => {
                for _ in 0..vlen {
                    let bits = u32_at(btf, off + 8)?;
                    let bits = if kind_flag { bits & 0xff_ffff } else { bits };
                    t.members
                        .push((u32_at(btf, off)?, u32_at(btf, off + 4)?, bits));
                    off += 12;
                }
            }
            6 | 13 => off += 8 * vlen,
            15 | 19 => off += 12 * vlen,
            2 | 7..=12 | 16 | 18 => {}
            k => return Err(bad(&format!("unknown BTF kind {k}"))),
        }
        types.push(t);
    }
    fn size_of(types: &[Type], id: u32, depth: u32) -> usize {
        let Some(t) = types.get(id as usize) else {
            return 0;
        };
        if depth > 32 {
            return 0;
        }
        match t.kind {
            1 | 4 | 5 | 6 | 16 | 19 => t.size_or_type as usize,
            2 => 8,
            3 => t
                .array
                .map_or(0, |(elem, n)| size_of(types, elem, depth + 1) * n as usize),
            8..=11 | 18 => size_of(types, t.size_or_type, depth + 1),
            _ => 0,
        }
    }
    Ok(types
        .iter()
        .filter(|t| t.kind == 4 && t.name_off != 0)
        .map(|t| Struct {
            name: name(t.name_off),
            size: t.size_or_type as usize,
            members: t
                .members
                .iter()
                .map(|&(n, ty, bits)| Member {
                    name: name(n),
                    offset: (bits / 8) as usize,
                    size: size_of(&types, ty, 0),
                })
                .collect(),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_garbage_and_every_prefix_of_the_object_without_panicking() {
        assert!(structs(b"not an elf").is_err());
        let obj = crate::OBJECT;
        for len in (0..obj.len()).step_by(97) {
            let _ = structs(&obj[..len]);
        }
        assert!(structs(obj).is_ok());
    }
}
