//! The account's delivery settings: `cfimg variants list|get|create|update|delete`,
//! `cfimg flexible-variants on|off` and `cfimg keys list|add|delete`.

use std::sync::atomic::AtomicU32;

use serde_json::{Value, json};

use super::{EXIT_OK, api_lane};
use crate::api::types::{SigningKeys, Variant, VariantOptions};
use crate::cli::{
    Cli, FlexibleArgs, KeysCommand, OnOff, VariantArgs, VariantUpdateArgs, VariantsCommand,
};
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

/// The variant as it is now with the given flags applied. The API replaces the whole
/// `options` object on a PATCH, so every field is sent: the ones not given keep their
/// current values instead of falling back to defaults.
fn merged(now: Variant, a: &VariantUpdateArgs) -> Variant {
    Variant {
        id: now.id,
        options: VariantOptions {
            fit: a.fit.clone().unwrap_or(now.options.fit),
            metadata: a.metadata.clone().unwrap_or(now.options.metadata),
            width: a.width.or(now.options.width),
            height: a.height.or(now.options.height),
        },
        // Absent means false to the API: send the current value so that it stays.
        never_require_signed_urls: Some(
            a.never_require_signed_urls
                .or(now.never_require_signed_urls)
                .unwrap_or(false),
        ),
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
        VariantsCommand::Get { id, output } => {
            let v = lane.call(&spent, || lane.client.variant(id)).await?;
            print_variant(&v.variant, output.json);
        }
        VariantsCommand::Create(a) => {
            let v = variant_of(a);
            // Not retried: a retry after a lost answer would meet "already exists".
            let made = lane.once(&spent, lane.client.create_variant(&v)).await?;
            print_variant(&made.variant, a.output.json);
        }
        VariantsCommand::Update(a) => {
            if a.fit.is_none()
                && a.metadata.is_none()
                && a.width.is_none()
                && a.height.is_none()
                && a.never_require_signed_urls.is_none()
            {
                return Err(Error::Usage(
                    "nothing to change: give --fit, --metadata, --width, --height or --never-require-signed-urls".into(),
                ));
            }
            let now = lane.call(&spent, || lane.client.variant(&a.id)).await?;
            let v = merged(now.variant, a);
            let made = lane.call(&spent, || lane.client.update_variant(&v)).await?;
            print_variant(&made.variant, a.output.json);
        }
        VariantsCommand::Delete { id } => {
            // Said before acting, so that a script's log shows what the delete broke.
            eprintln!(
                "cfimg: deleting variant {id}: every delivery URL ending in /{id} stops working{}",
                if id == "public" {
                    " (cfimg records delivery URLs with `public`: the URLs in `cfimg export` break)"
                } else {
                    ""
                }
            );
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
    if !on {
        // Said before acting, so that a script's log shows what it broke.
        eprintln!(
            "cfimg: turning flexible variants off: delivery URLs with resizing options in place of a variant name (e.g. /w=300) stop working"
        );
    }
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
        KeysCommand::List {
            show_values,
            output,
        } => {
            let keys = lane.call(&spent, || lane.client.keys()).await?;
            print_keys(&keys, *show_values, output.json);
        }
        KeysCommand::Add { name, rotate } => {
            let now = lane.call(&spent, || lane.client.keys()).await?;
            let exists = now.keys.iter().any(|k| k.name == *name);
            if exists && !rotate {
                return Err(Error::Usage(format!(
                    "key {name} exists already: adding it again would give it a new value, and every URL signed with the current one would stop working; give --rotate to do that, or choose another name"
                )));
            }
            if exists {
                eprintln!(
                    "cfimg: rotating key {name}: every URL signed with its current value stops working now; sign them again (`cfimg sign-url`)"
                );
            }
            let keys = lane.call(&spent, || lane.client.put_key(name)).await?;
            if exists {
                println!("key {name} rotated to a new value");
            } else {
                println!("key {name} created");
            }
            print_keys(&keys, false, false);
        }
        KeysCommand::Delete { name } => {
            let keys = lane.call(&spent, || lane.client.keys()).await?;
            if keys.keys.len() == 1 && keys.keys[0].name == *name {
                return Err(Error::Usage(format!(
                    "{name} is the account's last signing key: add another first (`cfimg keys add NAME`), or private images cannot be delivered"
                )));
            }
            if keys.keys.iter().any(|k| k.name == *name) {
                eprintln!("cfimg: deleting key {name}: every URL signed with it stops working now");
            }
            let left = lane.call(&spent, || lane.client.delete_key(name)).await?;
            println!("key {name} deleted");
            print_keys(&left, false, false);
        }
    }
    Ok(EXIT_OK)
}
