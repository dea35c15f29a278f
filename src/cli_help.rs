//! The end of each command's `--help`: two or three examples, then the credentials and
//! other environment variables the command reads. Kept apart from the flags in `cli.rs`.

/// The credentials every command that talks to the API reads.
macro_rules! api_credentials {
    () => {
        "Credentials: CLOUDFLARE_API_TOKEN and CLOUDFLARE_ACCOUNT_ID (or api_token, api_token_file \
         and account_id in --config). CFIMG_API_BASE_URL points them at another API, e.g. a \
         `cfimg emulator` (eval its output)."
    };
}

/// Commands that only read the ledger.
macro_rules! no_credentials {
    () => {
        "Credentials: none (it reads the ledger only, and sends no request)."
    };
}

/// `cfimg --help`.
pub const CFIMG: &str = concat!(
    "Examples:
  cfimg migrate examples/images --emulator       # try it: a migration into the built-in emulator
  cfimg migrate /srv/images --dry-run            # what would be uploaded, and how long it takes
  cfimg migrate /srv/images && cfimg status      # the run, then the ledger's view

",
    api_credentials!(),
    "\nEach command's --help has its own examples."
);

/// `cfimg migrate --help`.
pub const MIGRATE: &str = concat!(
    "Examples:
  cfimg migrate /srv/images --dry-run                      # plan only: no request, no ledger
  cfimg migrate /srv/images --ledger /var/lib/cfimg/images.sqlite --id-prefix legacy/
  cfimg migrate --manifest urls.csv --url-mode local --id-mode hash

",
    api_credentials!(),
    " Not needed with --dry-run or --emulator. A bucket (s3://...) reads AWS_ACCESS_KEY_ID, \
     AWS_SECRET_ACCESS_KEY and AWS_SESSION_TOKEN; gs://... GOOGLE_APPLICATION_CREDENTIALS (or \
     GOOGLE_SERVICE_ACCOUNT, GOOGLE_SERVICE_ACCOUNT_KEY); az://... AZURE_STORAGE_ACCOUNT_NAME with \
     AZURE_STORAGE_ACCOUNT_KEY (or AZURE_STORAGE_SAS_TOKEN, AZURE_CLIENT_ID/SECRET/TENANT_ID); \
     --transport batch mints its batch tokens with the API token. CFIMG_SHARD sets --shard."
);

/// `cfimg watch --help`.
pub const WATCH: &str = concat!(
    "Examples:
  cfimg watch /srv/uploads --emulator                      # try it with no account
  cfimg watch /srv/uploads --on-delete delete --max-delete 100
  cfimg watch /srv/uploads --metrics-addr 127.0.0.1:9464 --ledger /var/lib/cfimg/watch.sqlite

",
    api_credentials!(),
    " Under systemd the token may come as a credential: $CREDENTIALS_DIRECTORY/api_token \
     (LoadCredential=api_token:...). SIGHUP reloads --config."
);

/// `cfimg status --help`.
pub const STATUS: &str = concat!(
    "Examples:
  cfimg status
  cfimg status --ledger cfimg-emulator.sqlite    # after `migrate --emulator`
  cfimg status --json

",
    no_credentials!()
);

/// `cfimg failures --help`.
pub const FAILURES: &str = concat!(
    "Examples:
  cfimg failures
  cfimg failures --all --ledger cfimg-emulator.sqlite
  cfimg failures --json

",
    no_credentials!()
);

/// `cfimg validate --help`.
pub const VALIDATE: &str = concat!(
    "Examples:
  cfimg validate
  cfimg validate --config /etc/cfimg/cfimg.toml

",
    api_credentials!(),
    " It sends one request (GET stats) and says whether the token may write."
);

/// `cfimg emulator --help`.
pub const EMULATOR: &str = "Examples:
  cfimg emulator > emulator.env &     # then `. ./emulator.env`: every cfimg command uses it
  cfimg emulator --data ./emu-state   # state survives restarts
  cfimg emulator --rate-limit off --fault-503 0.1 --fault-seed 7

It prints four `export NAME='value'` lines (CFIMG_API_BASE_URL, CFIMG_BATCH_BASE_URL,
CLOUDFLARE_ACCOUNT_ID, CLOUDFLARE_API_TOKEN) for a POSIX shell to eval, then serves until
Ctrl-C or SIGTERM.

Credentials: none of its own; its clients must send the --token value (the CLOUDFLARE_API_TOKEN it prints). CFIMG_EMULATOR_WEBHOOK_SECRET sets --webhook-secret.";

/// `cfimg export --help`.
pub const EXPORT: &str = concat!(
    "Examples:
  cfimg export -o mapping.csv
  cfimg export --format jsonl --source dir:/srv/images > mapping.jsonl

",
    no_credentials!()
);

/// `cfimg rewrite --help`.
pub const REWRITE: &str = concat!(
    "Examples:
  cfimg rewrite --old-base https://www.example.com/wp-content/uploads/ site/   # report only
  cfimg rewrite --old-base https://www.example.com/wp-content/uploads/ --in-place --journal j dump.sql
  cfimg rewrite --undo j

Finds absolute (http and https), protocol-relative and root-relative forms of every old
URL, also with JSON-escaped slashes (https:\\/\\/, and https:\\\\/\\\\/ in a SQL dump);
corrects PHP-serialized lengths (s:N:\"...\") around them. Prints `missed FILE:LINE URL`
for every old URL the ledger cannot map. Exit status: 0 all replaced, 1 some missed,
2 usage.

",
    no_credentials!()
);

/// `cfimg verify --help`.
pub const VERIFY: &str = concat!(
    "Examples:
  cfimg verify
  cfimg verify --repair          # re-queue missing images, delete duplicates
  cfimg verify --deep --sample 5%  # the stored pictures of 5% of the items, against their sources

--deep lists one line per image that is not `ok` or `recompressed` (different, missing,
source gone, source changed, same dimensions, unchecked), then a summary; with --json each
is a JSON object on its own line ({\"verdict\", \"source\", \"key\", \"image_id\", ...}) and
the last line is {\"summary\": {...}}. Exit 1 when an image is different or missing, or
could not be checked.

",
    api_credentials!()
);

/// `cfimg ledger --help`.
pub const LEDGER: &str = concat!(
    "Examples:
  cfimg ledger rebuild --source /srv/images --ledger new.sqlite
  cfimg ledger rebuild --manifest urls.csv

",
    api_credentials!()
);

/// `cfimg ledger rebuild --help`.
pub const LEDGER_REBUILD: &str = concat!(
    "Examples:
  cfimg ledger rebuild --source /srv/images --ledger new.sqlite
  cfimg ledger rebuild --source s3://bucket/img --endpoint-url https://ACCOUNT.r2.cloudflarestorage.com
  cfimg ledger rebuild --manifest urls.csv --json

",
    api_credentials!(),
    " A bucket reads AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_SESSION_TOKEN; give it the \
     same --endpoint-url and --region as `migrate` was given."
);

/// `cfimg ledger backup --help`.
pub const LEDGER_BACKUP: &str = concat!(
    "Examples:
  cfimg ledger backup /backups/cfimg.sqlite
  cfimg ledger backup --ledger /var/lib/cfimg/cfimg.sqlite /backups/cfimg.sqlite --force

",
    no_credentials!()
);

/// `cfimg ledger check --help`.
pub const LEDGER_CHECK: &str = concat!(
    "Examples:
  cfimg ledger check
  cfimg ledger check --ledger /var/lib/cfimg/cfimg.sqlite

",
    no_credentials!()
);

/// `cfimg images --help`.
pub const IMAGES: &str = concat!(
    "Examples:
  cfimg images list --creator alice --jsonl
  cfimg images get photos/cat.jpg
  cfimg images stats

",
    api_credentials!()
);

/// `cfimg images list --help`.
pub const IMAGES_LIST: &str = concat!(
    "Examples:
  cfimg images list
  cfimg images list --creator alice --meta album=2024 --jsonl

",
    api_credentials!()
);

/// `cfimg images get --help`.
pub const IMAGES_GET: &str = concat!(
    "Examples:
  cfimg images get photos/cat.jpg
  cfimg images get 2cdc28f0-017a-49c4-9ed7-87056c83901a --json

",
    api_credentials!()
);

/// `cfimg images update --help`.
pub const IMAGES_UPDATE: &str = concat!(
    "Examples:
  cfimg images update photos/cat.jpg --metadata '{\"album\":\"2024\"}'
  cfimg images update photos/cat.jpg --require-signed-urls true --creator alice

",
    api_credentials!()
);

/// `cfimg images delete --help`.
pub const IMAGES_DELETE: &str = concat!(
    "Examples:
  cfimg images delete photos/cat.jpg --ledger /var/lib/cfimg/cfimg.sqlite --dry-run
  cfimg images delete photos/cat.jpg photos/dog.jpg --yes
  cfimg images delete photos/cat.jpg --force   # the ledger maps it: the next migrate uploads it again

",
    api_credentials!()
);

/// `cfimg images blob --help`.
pub const IMAGES_BLOB: &str = concat!(
    "Examples:
  cfimg images blob photos/cat.jpg -o cat.jpg

",
    api_credentials!()
);

/// `cfimg images stats --help`.
pub const IMAGES_STATS: &str = concat!(
    "Examples:
  cfimg images stats
  cfimg images stats --json

",
    api_credentials!()
);

/// `cfimg variants --help`.
pub const VARIANTS: &str = concat!(
    "Examples:
  cfimg variants list
  cfimg variants create thumb --fit cover --width 200 --height 200
  cfimg variants delete thumb

",
    api_credentials!()
);

/// `cfimg variants list --help`.
pub const VARIANTS_LIST: &str = concat!(
    "Examples:
  cfimg variants list
  cfimg variants list --json

",
    api_credentials!()
);

/// `cfimg variants get --help`.
pub const VARIANTS_GET: &str = concat!(
    "Examples:
  cfimg variants get public
  cfimg variants get thumb --json

",
    api_credentials!()
);

/// `cfimg variants create --help`.
pub const VARIANTS_CREATE: &str = concat!(
    "Examples:
  cfimg variants create thumb --fit cover --width 200 --height 200
  cfimg variants create hero --width 1600 --metadata keep --never-require-signed-urls true

",
    api_credentials!()
);

/// `cfimg variants update --help`.
pub const VARIANTS_UPDATE: &str = concat!(
    "Examples:
  cfimg variants update thumb --width 300          # fit, height and the rest keep their values
  cfimg variants update thumb --fit cover --height 300

",
    api_credentials!()
);

/// `cfimg variants delete --help`.
pub const VARIANTS_DELETE: &str = concat!(
    "Examples:
  cfimg variants delete thumb

",
    api_credentials!()
);

/// `cfimg flexible-variants --help`.
pub const FLEXIBLE_VARIANTS: &str = concat!(
    "Examples:
  cfimg flexible-variants on      # then https://imagedelivery.net/HASH/ID/w=400,h=300 works
  cfimg flexible-variants off

",
    api_credentials!()
);

/// `cfimg keys --help`.
pub const KEYS: &str = concat!(
    "Examples:
  cfimg keys list
  cfimg keys add web
  cfimg keys delete old

",
    api_credentials!()
);

/// `cfimg keys list --help`.
pub const KEYS_LIST: &str = concat!(
    "Examples:
  cfimg keys list
  cfimg keys list --show-values --json

",
    api_credentials!()
);

/// `cfimg keys add --help`.
pub const KEYS_ADD: &str = concat!(
    "Examples:
  cfimg keys add web
  cfimg keys add web --rotate   # a new value: URLs signed with the old one stop working

",
    api_credentials!()
);

/// `cfimg keys delete --help`.
pub const KEYS_DELETE: &str = concat!(
    "Examples:
  cfimg keys delete old

",
    api_credentials!()
);

/// `cfimg sign-url --help`.
pub const SIGN_URL: &str = concat!(
    "Examples:
  cfimg sign-url https://imagedelivery.net/HASH/ID/public --expires-in 1h
  cfimg sign-url https://imagedelivery.net/HASH/ID/thumb --expires-at 1893456000 --key web

",
    api_credentials!(),
    " The key's value is read from the account (GET keys)."
);

/// `cfimg direct-upload --help`.
pub const DIRECT_UPLOAD: &str = concat!(
    "Examples:
  cfimg direct-upload create --expires-in 1h --creator alice
  cfimg direct-upload status

",
    api_credentials!()
);

/// `cfimg direct-upload create --help`.
pub const DIRECT_UPLOAD_CREATE: &str = concat!(
    "Examples:
  cfimg direct-upload create
  cfimg direct-upload create --id avatars/alice.png --expires-in 1h --json
  cfimg direct-upload create --require-signed-urls --metadata '{\"user\":\"alice\"}'

",
    api_credentials!()
);

/// `cfimg direct-upload status --help`.
pub const DIRECT_UPLOAD_STATUS: &str = concat!(
    "Examples:
  cfimg direct-upload status
  cfimg direct-upload status avatars/alice.png --json
  cfimg direct-upload status --no-refresh      # the ledger as it is, no request

",
    api_credentials!()
);

/// `cfimg serve --help`.
pub const SERVE: &str = concat!(
    "Examples:
  cfimg serve --emulator --demo          # the whole flow locally, no account: open the page
  cfimg serve --listen 0.0.0.0:8788 --config /etc/cfimg/serve.toml

",
    api_credentials!(),
    " Not needed with --emulator. CFIMG_WEBHOOK_SECRET is the secret Cloudflare's webhooks \
     must carry; app keys come from [serve] in --config."
);

/// `cfimg redirects --help`.
pub const REDIRECTS: &str = concat!(
    "Examples:
  cfimg redirects --format nginx -o /etc/nginx/conf.d/cfimg-redirects.conf
  cfimg redirects --format cloudflare-bulk --old-base https://www.example.com/uploads/ -o bulk.csv
  cfimg redirects check --old-base https://www.example.com/uploads/ --sample 1000

Old bases: --old-base URL (repeatable) plus those stored with `cfimg source set-old-base`.
Items that are not uploaded get no rule; stderr counts them, and the old URLs a format
cannot express. nginx: add `if ($cfimg_redirect) { return 301 $cfimg_redirect; }` to the
server block; the file sets map_hash_max_size and map_hash_bucket_size for its keys.

",
    no_credentials!()
);

/// `cfimg redirects check --help`.
pub const REDIRECTS_CHECK: &str = "Examples:
  cfimg redirects check --old-base https://www.example.com/uploads/
  cfimg redirects check --host http://127.0.0.1:8080 --sample 5% --rate 20

Exit status: 0 when every old URL checked redirects to its delivery URL, 1 otherwise.
Credentials: none (it requests the old URLs only).";

/// `cfimg source --help`.
pub const SOURCE: &str = concat!(
    "Examples:
  cfimg source set-old-base /srv/uploads https://www.example.com/uploads/
  cfimg source list

",
    "Credentials: none (it reads and writes the ledger only)."
);

/// `cfimg source set-old-base --help`.
pub const SOURCE_SET_OLD_BASE: &str = concat!(
    "Examples:
  cfimg source set-old-base /srv/uploads https://www.example.com/uploads/ https://cdn.example.com/uploads/
  cfimg source set-old-base /srv/uploads

Without URL, the source's old bases are forgotten.

",
    "Credentials: none (it writes the ledger only)."
);

/// `cfimg source list --help`.
pub const SOURCE_LIST: &str = concat!(
    "Examples:
  cfimg source list

",
    no_credentials!()
);
/// `cfimg completions --help`.
pub const COMPLETIONS: &str = "Examples:
  cfimg completions bash > ~/.local/share/bash-completion/completions/cfimg
  cfimg completions zsh > ~/.zfunc/_cfimg        # with fpath+=(~/.zfunc) before compinit
  cfimg completions fish > ~/.config/fish/completions/cfimg.fish

Credentials: none (it prints a script, and sends no request).";

/// `cfimg man --help`.
pub const MAN: &str = "Examples:
  cfimg man --out /usr/local/share/man/man1    # then `mandb -q` and `man cfimg-migrate`
  cfimg man --out man/man1                     # then `man -l man/man1/cfimg.1`

Credentials: none (it writes the pages, and sends no request).";
