//! The store on each backend's migrated schema: every fixed statement,
//! including each backend's own variants, prepares; migrating again is a
//! no-op; the page queries run. (The behaviour tests run every statement
//! through the API as well.)

use std::time::Duration;

use sbcftp_tracker::store::Store;

use crate::helpers::{Backend, TestDb};

crate::backend_tests!(every_statement_prepares_on_the_migrated_schema);

async fn every_statement_prepares_on_the_migrated_schema(backend: Backend) {
    let Some(db) = TestDb::create(backend).await else {
        return;
    };
    let store = Store::connect(&db.url, 2, Duration::from_secs(5))
        .await
        .unwrap();
    store.migrate().await.unwrap();
    store.migrate().await.unwrap();
    assert_eq!(store.prepare_all().await.unwrap(), 28);
    assert!(store.hash_page(0, None, None, 10).await.unwrap().is_empty());
    let found = store
        .hash_page(0, None, Some(&["50".to_owned(), "off".to_owned()]), 10)
        .await
        .unwrap();
    assert!(found.is_empty());
    store.close().await;
}
