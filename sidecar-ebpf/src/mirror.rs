//! The registry of Rust mirrors of C structs ([`crate::MIRRORS`]): what each one's layout is, so
//! that a test (`sidecar/tests/mirrors.rs`) compares it with the struct in the compiled objects'
//! BTF, field by field. Adding a mirror is one `mirror!` line in that list.
//!
//! At compile time every entry is also checked to list its type's fields in order, end to end,
//! with nothing left over: a field forgotten in the list, or implicit padding (which would make
//! the `Pod` impls unsound), fails the build.

/// One `#[repr(C)]` Rust type standing for a C struct of `include/sidecar.h`.
#[derive(Clone, Copy, Debug)]
pub struct Mirror {
    /// The Rust type as written in the registry (`net::PeerKey`).
    pub rust: &'static str,
    /// The C struct's name, without `struct`.
    pub c: &'static str,
    pub size: usize,
    pub fields: &'static [MirrorField],
}

#[derive(Clone, Copy, Debug)]
pub struct MirrorField {
    pub rust: &'static str,
    /// The C member's name: the Rust name unless renamed (`rust_name as "c_name"`).
    pub c: &'static str,
    pub offset: usize,
    pub size: usize,
}

/// `mirror!(RustType => "c_struct" { field, other_field as "c_name", ... })`: every field of the
/// type, in declaration order.
macro_rules! mirror {
    ($ty:ty => $c:literal { $($field:ident $(as $cf:literal)?),+ $(,)? }) => {
        $crate::mirror::checked($crate::mirror::Mirror {
            rust: stringify!($ty),
            c: $c,
            size: ::core::mem::size_of::<$ty>(),
            fields: &[$($crate::mirror::MirrorField {
                rust: stringify!($field),
                c: $crate::mirror::c_name!($field $(as $cf)?),
                offset: ::core::mem::offset_of!($ty, $field),
                size: $crate::mirror::size_of_field(|t: &$ty| &t.$field),
            }),+],
        })
    };
}

macro_rules! c_name {
    ($field:ident) => {
        stringify!($field)
    };
    ($field:ident as $c:literal) => {
        $c
    };
}

pub(crate) use {c_name, mirror};

/// The size of a field, named through an accessor (no value of the type is needed).
pub const fn size_of_field<T, F>(_: fn(&T) -> &F) -> usize {
    core::mem::size_of::<F>()
}

/// Fails const evaluation unless the fields tile the type: first at 0, each where the previous
/// one ends, the last ending at its size.
pub const fn checked(m: Mirror) -> Mirror {
    let mut end = 0;
    let mut i = 0;
    while i < m.fields.len() {
        assert!(
            m.fields[i].offset == end,
            "mirror!: a field is missing from the list, out of order, or after implicit padding"
        );
        end += m.fields[i].size;
        i += 1;
    }
    assert!(
        end == m.size,
        "mirror!: the last fields are missing from the list, or the type has trailing padding"
    );
    m
}

impl Mirror {
    pub fn field(&self, c_name: &str) -> Option<&MirrorField> {
        self.fields.iter().find(|f| f.c == c_name)
    }
}
