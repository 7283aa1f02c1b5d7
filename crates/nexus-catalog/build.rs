//! Embeds `catalog/` (at the workspace root) into the crate: every
//! `NAME.json` but `schema.json`, the logo `NAME.svg` beside it, and the
//! schema. The files stay data; this only writes the list of `include_str!`s.

use std::fmt::Write as _;
use std::path::PathBuf;

fn main() {
    let dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap()).join("../../catalog");
    let dir = dir.canonicalize().expect("the catalog/ directory at the workspace root");
    println!("cargo:rerun-if-changed={}", dir.display());
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .expect("catalog/ is readable")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|f| f.ends_with(".json") && f != "schema.json")
        .map(|f| f.trim_end_matches(".json").to_owned())
        .collect();
    names.sort();
    let mut out = String::from("/// (name, entry JSON, logo SVG) for every catalog file, by name.\npub static FILES: &[(&str, &str, Option<&str>)] = &[\n");
    for name in &names {
        let json = dir.join(format!("{name}.json"));
        let svg = dir.join(format!("{name}.svg"));
        println!("cargo:rerun-if-changed={}", json.display());
        println!("cargo:rerun-if-changed={}", svg.display());
        let logo =
            if svg.exists() { format!("Some(include_str!({:?}))", svg.display().to_string()) } else { "None".into() };
        writeln!(out, "    ({name:?}, include_str!({:?}), {logo}),", json.display().to_string()).unwrap();
    }
    out.push_str("];\n");
    let schema = dir.join("schema.json");
    println!("cargo:rerun-if-changed={}", schema.display());
    writeln!(
        out,
        "/// The catalog's own JSON Schema.\npub static SCHEMA: &str = include_str!({:?});",
        schema.display().to_string()
    )
    .unwrap();
    let target = PathBuf::from(std::env::var("OUT_DIR").unwrap()).join("catalog_files.rs");
    std::fs::write(target, out).expect("OUT_DIR is writable");
}
