use funnel_db::DbSettings;
use sqlx::PgPool;

/// The server tests create their databases on.
fn admin_url() -> String {
    std::env::var("FUNNEL_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// A database of one test's own, migrated. Its name starts with `funnel_test_` so the test
/// script can drop leftovers of earlier runs.
#[derive(Debug)]
pub struct TestDb {
    pub pool: PgPool,
    pub settings: DbSettings,
    pub name: String,
}

pub async fn test_database() -> TestDb {
    let name = format!("funnel_test_{}", uuid::Uuid::new_v4().simple());
    let admin = admin_url();
    let base = admin
        .rsplit_once('/')
        .map_or(admin.as_str(), |(base, _)| base);
    let settings = DbSettings::new(format!("{base}/{name}"));
    funnel_db::ensure_database(&settings)
        .await
        .expect("create test database");
    let pool = funnel_db::connect(&settings)
        .await
        .expect("connect to test database");
    funnel_db::migrate(&pool)
        .await
        .expect("migrate test database");
    TestDb {
        pool,
        settings,
        name,
    }
}
