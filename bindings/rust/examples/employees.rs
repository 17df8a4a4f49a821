//! A struct as a compound key, one field descending, and a prefix range scan.
//! `sop <folder> scan staff` prints the keys as tuples, since the store
//! records the key's index specification.
//!
//!     cargo run --example employees -- ./data

use serde::{Deserialize, Serialize};
use sop::{Context, Database, DatabaseOptions, Desc};

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
struct EmployeeKey {
    region: String,
    dept: String,
    id: Desc<i64>, // newest (highest) id first within a department
}

#[derive(Debug, Serialize, Deserialize)]
struct Employee {
    name: String,
    salary: u32,
}

fn main() -> sop::Result<()> {
    let folder = std::env::args().nth(1).unwrap_or_else(|| "./data".into());
    let ctx = Context::new();
    let mut options = DatabaseOptions::default();
    options.stores_folders = Some(vec![folder]);
    let db = Database::new(&ctx, options)?;

    let trans = db.begin_transaction(&ctx)?;
    let staff = db.new_btree::<EmployeeKey, Employee>(&ctx, "staff", &trans, None)?;
    println!("key spec: {}", staff.key_spec().unwrap_or("-"));
    for (region, dept, id, name, salary) in [
        ("US", "Sales", 7, "Grace", 90),
        ("US", "Sales", 21, "Barbara", 95),
        ("US", "Eng", 3, "Ada", 120),
        ("UK", "Eng", 5, "Alan", 110),
    ] {
        let key = EmployeeKey { region: region.into(), dept: dept.into(), id: Desc(id) };
        staff.upsert(&ctx, key, Employee { name: name.into(), salary })?;
    }
    trans.commit(&ctx)?;

    let trans = db.begin_read_transaction(&ctx)?;
    let staff = db.open_btree::<EmployeeKey, Employee>(&ctx, "staff", &trans)?;
    println!("everyone in US (dept ascending, id descending):");
    for item in staff.prefix(&("US",)) {
        let (k, e) = item?;
        println!("  {} {:>3} {} {}", k.dept, k.id.0, e.name, e.salary);
    }
    println!("US/Sales, backwards:");
    for item in staff.prefix(&("US", "Sales")).rev() {
        let (k, e) = item?;
        println!("  {} {}", k.id.0, e.name);
    }
    Ok(())
}
