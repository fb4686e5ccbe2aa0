//! The Rust mirrors of the map ABI equal the C structs, as the object's BTF describes them.

use strata_datapath::{
    OBJECT,
    abi::{
        Config, Counter, CtKey, CtValue, Endpoint, Event, IpcacheKey, IpcacheValue, Layout,
        PolicyKey, PolicyKeyData, PolicyValue,
    },
    btf,
};

fn check<T: Layout>(structs: &[btf::Struct]) {
    let c = structs
        .iter()
        .find(|s| s.name == T::C_NAME)
        .unwrap_or_else(|| panic!("struct {} not in the object's BTF", T::C_NAME));
    assert_eq!(c.size, T::size(), "size of struct {}", T::C_NAME);
    let rust: Vec<(String, usize, usize)> = T::fields()
        .iter()
        .map(|f| (f.name.to_owned(), f.offset, f.size))
        .collect();
    let ours: Vec<(String, usize, usize)> = c
        .members
        .iter()
        .map(|m| (m.name.clone(), m.offset, m.size))
        .collect();
    assert_eq!(rust, ours, "fields of struct {}", T::C_NAME);
}

#[test]
fn every_abi_type_matches_its_c_struct() {
    let structs = btf::structs(OBJECT).expect("BTF of the embedded object");
    check::<Endpoint>(&structs);
    check::<IpcacheKey>(&structs);
    check::<IpcacheValue>(&structs);
    check::<PolicyKey>(&structs);
    check::<PolicyValue>(&structs);
    check::<PolicyKeyData>(&structs);
    check::<CtKey>(&structs);
    check::<CtValue>(&structs);
    check::<Counter>(&structs);
    check::<Config>(&structs);
    check::<Event>(&structs);
}

#[test]
fn a_drifted_type_is_caught() {
    // A struct with the C name of the endpoint but its fields swapped must not pass.
    #[repr(C)]
    struct Drifted {
        identity: u32,
        endpoint_id: u32,
        flags: u32,
        reserved: u32,
    }
    impl Layout for Drifted {
        const C_NAME: &'static str = "strata_endpoint";
        fn fields() -> Vec<strata_datapath::abi::Field> {
            vec![
                strata_datapath::abi::Field {
                    name: "identity",
                    offset: std::mem::offset_of!(Drifted, identity),
                    size: 4,
                },
                strata_datapath::abi::Field {
                    name: "endpoint_id",
                    offset: std::mem::offset_of!(Drifted, endpoint_id),
                    size: 4,
                },
                strata_datapath::abi::Field {
                    name: "flags",
                    offset: std::mem::offset_of!(Drifted, flags),
                    size: 4,
                },
                strata_datapath::abi::Field {
                    name: "reserved",
                    offset: std::mem::offset_of!(Drifted, reserved),
                    size: 4,
                },
            ]
        }
        fn size() -> usize {
            std::mem::size_of::<Drifted>()
        }
    }
    let structs = btf::structs(OBJECT).expect("BTF");
    let r = std::panic::catch_unwind(|| check::<Drifted>(&structs));
    assert!(r.is_err());
}
