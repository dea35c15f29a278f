//! The account's delivery settings: `cfimg variants list|get|create|update|delete`,
//! `cfimg flexible-variants on|off` and `cfimg keys list|add|delete`.

use std::sync::atomic::AtomicU32;

use serde_json::{Value, json};

use super::{EXIT_OK, api_lane};
use crate::api::types::{SigningKeys, Variant, VariantOptions};
use crate::cli::{Cli, FlexibleArgs, KeysCommand, OnOff, VariantArgs, VariantsCommand};
use crate::error::{Error, Result};

fn variant_of(a: &VariantArgs) -> Variant {
    Variant {
        id: a.id.clone(),
        options: VariantOptions {
            fit: a.fit.clone(),
            metadata: a.metadata.clone(),
            width: a.width,
            height: a.height,
        },
        never_require_signed_urls: a.never_require_signed_urls,
    }
}

fn variant_line(v: &Variant) -> String {
    let side = |s: Option<u32>| s.map_or("-".to_string(), |n| n.to_string());
    format!(
        "{}\tfit={}\twidth={}\theight={}\tmetadata={}{}",
        v.id,
        v.options.fit,
        side(v.options.width),
        side(v.options.height),
        v.options.metadata,
        if v.never_require_signed_urls == Some(true) {
            "\talways public"
        } else {
            ""
        }
    )
}

fn print_variant(v: &Variant, as_json: bool) {
    if as_json {
        println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
    } else {
        println!("{}", variant_line(v));
    }
}

/// Runs a `variants` subcommand.
pub async fn variants(cli: &Cli, cmd: &VariantsCommand) -> Result<i32> {
    let (_cfg, lane) = api_lane(cli)?;
    let spent = AtomicU32::new(0);
    match cmd {
        VariantsCommand::List(out) => {
            let list = lane.call(&spent, || lane.client.variants()).await?;
            if out.json {
                println!("{}", Value::Object(list.variants));
                return Ok(EXIT_OK);
            }
            let mut all: Vec<Variant> = list
                .variants
                .into_iter()
                .filter_map(|(_, v)| serde_json::from_value(v).ok())
                .collect();
            all.sort_by(|a, b| a.id.cmp(&b.id));
            for v in &all {
                println!("{}", variant_line(v));
            }
        }
        VariantsCommand::Get { id, json } => {
            let v = lane.call(&spent, || lane.client.variant(id)).await?;
            print_variant(&v.variant, *json);
        }
        VariantsCommand::Create(a) => {
            let v = variant_of(a);
            // Not retried: a retry after a lost answer would meet "already exists".
            let made = lane.once(&spent, lane.client.create_variant(&v)).await?;
            print_variant(&made.variant, a.json);
        }
        VariantsCommand::Update(a) => {
            let v = variant_of(a);
            let made = lane.call(&spent, || lane.client.update_variant(&v)).await?;
            print_variant(&made.variant, a.json);
        }
        VariantsCommand::Delete { id } => {
            if id == "public" {
                eprintln!("cfimg: note: `public` is the variant cfimg records delivery URLs with");
            }
            lane.call(&spent, || lane.client.delete_variant(id)).await?;
            println!("deleted variant {id}");
        }
    }
    Ok(EXIT_OK)
}

/// `cfimg flexible-variants on|off`.
pub async fn flexible(cli: &Cli, args: &FlexibleArgs) -> Result<i32> {
    let (_cfg, lane) = api_lane(cli)?;
    let spent = AtomicU32::new(0);
    let on = args.state == OnOff::On;
    let answer = lane
        .call(&spent, || lane.client.set_flexible_variants(on))
        .await?;
    let now = answer
        .get("flexible_variants")
        .and_then(Value::as_bool)
        .unwrap_or(on);
    println!("flexible variants {}", if now { "on" } else { "off" });
    Ok(EXIT_OK)
}

fn print_keys(keys: &SigningKeys, show_values: bool, as_json: bool) {
    if as_json {
        let keys: Vec<Value> = keys
            .keys
            .iter()
            .map(|k| {
                if show_values {
                    json!({ "name": k.name, "value": k.value })
                } else {
                    json!({ "name": k.name })
                }
            })
            .collect();
        println!("{}", Value::Array(keys));
        return;
    }
    for k in &keys.keys {
        if show_values {
            println!("{}\t{}", k.name, k.value);
        } else {
            println!("{}", k.name);
        }
    }
}

/// Runs a `keys` subcommand.
pub async fn keys(cli: &Cli, cmd: &KeysCommand) -> Result<i32> {
    let (_cfg, lane) = api_lane(cli)?;
    let spent = AtomicU32::new(0);
    match cmd {
        KeysCommand::List { show_values, json } => {
            let keys = lane.call(&spent, || lane.client.keys()).await?;
            print_keys(&keys, *show_values, *json);
        }
        KeysCommand::Add { name } => {
            let keys = lane.call(&spent, || lane.client.put_key(name)).await?;
            println!("key {name} created (or rotated to a new value)");
            print_keys(&keys, false, false);
        }
        KeysCommand::Delete { name } => {
            let keys = lane.call(&spent, || lane.client.keys()).await?;
            if keys.keys.len() == 1 && keys.keys[0].name == *name {
                return Err(Error::Usage(format!(
                    "{name} is the account's last signing key: add another first (`cfimg keys add NAME`), or private images cannot be delivered"
                )));
            }
            let left = lane.call(&spent, || lane.client.delete_key(name)).await?;
            println!("key {name} deleted; URLs signed with it no longer work");
            print_keys(&left, false, false);
        }
    }
    Ok(EXIT_OK)
}
