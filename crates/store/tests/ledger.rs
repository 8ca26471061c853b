//! The ledger on SQLite and on the machine's PostgreSQL (a fresh database per test).

use std::time::Duration;

use hookbus_store::testing::{drop_postgres_database, fresh_postgres_database};
use hookbus_store::{Backend, Migrations, Store, claim, last_sequence, prune};

const APP: Migrations = Migrations::new_const();

async fn each_backend<F, Fut>(test: F)
where
    F: Fn(Store) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let dir = tempfile::tempdir().unwrap();
    let sqlite = format!("sqlite://{}", dir.path().join("ledger.db").display());
    let store = Store::open(&sqlite, APP).await.unwrap();
    assert_eq!(store.backend(), Backend::Sqlite);
    test(store).await;

    let url = fresh_postgres_database()
        .await
        .expect("the machine's PostgreSQL at 127.0.0.1:5432");
    let store = Store::open(&url, APP).await.unwrap();
    assert_eq!(store.backend(), Backend::Postgres);
    test(store.clone()).await;
    store.pool().close().await;
    drop_postgres_database(&url).await.unwrap();
}

#[tokio::test]
async fn an_event_is_claimed_once_and_a_rollback_leaves_no_claim() {
    each_backend(|store| async move {
        let mut tx = store.begin().await.unwrap();
        assert!(claim(&mut tx, "c", "rolled-back", 1).await.unwrap());
        tx.rollback().await.unwrap();

        let mut tx = store.begin().await.unwrap();
        assert!(
            claim(&mut tx, "c", "rolled-back", 1).await.unwrap(),
            "a rollback leaves no claim"
        );
        tx.commit().await.unwrap();

        let mut tx = store.begin().await.unwrap();
        assert!(
            !claim(&mut tx, "c", "rolled-back", 1).await.unwrap(),
            "second claim refused"
        );
        assert!(
            claim(&mut tx, "other-consumer", "rolled-back", 1)
                .await
                .unwrap(),
            "claims are per consumer"
        );
        tx.commit().await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn concurrent_claims_of_one_event_let_exactly_one_win() {
    each_backend(|store| async move {
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..8 {
            let store = store.clone();
            tasks.spawn(async move {
                let mut tx = store.begin().await.unwrap();
                let won = claim(&mut tx, "c", "contended", 7).await.unwrap();
                tx.commit().await.unwrap();
                won
            });
        }
        let mut winners = 0;
        while let Some(won) = tasks.join_next().await {
            winners += usize::from(won.unwrap());
        }
        assert_eq!(winners, 1);
    })
    .await;
}

#[tokio::test]
async fn last_sequence_and_pruning() {
    each_backend(|store| async move {
        assert_eq!(last_sequence(store.pool(), "c").await.unwrap(), None);
        let mut tx = store.begin().await.unwrap();
        for (id, seq) in [("a", 3), ("b", 9), ("c", 5)] {
            claim(&mut tx, "c", id, seq).await.unwrap();
        }
        tx.commit().await.unwrap();
        assert_eq!(last_sequence(store.pool(), "c").await.unwrap(), Some(9));
        assert_eq!(
            prune(store.pool(), Duration::from_secs(3600))
                .await
                .unwrap(),
            0,
            "recent rows stay"
        );
        // Timestamps are whole seconds: once a full second has passed, every row is older than
        // a zero retention, and all three go.
        tokio::time::sleep(Duration::from_millis(1100)).await;
        assert_eq!(
            prune(store.pool(), Duration::ZERO).await.unwrap(),
            3,
            "rows older than the retention go"
        );
        assert_eq!(last_sequence(store.pool(), "c").await.unwrap(), None);
    })
    .await;
}

#[tokio::test]
async fn migrations_run_once_and_reopening_is_harmless() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("twice.db").display());
    let app = Migrations::new(&[(100, "things", "CREATE TABLE things (id TEXT PRIMARY KEY)")]);
    Store::open(&url, app.clone()).await.unwrap();
    let store = Store::open(&url, app).await.unwrap();
    sqlx::query("INSERT INTO things (id) VALUES ('x')")
        .execute(store.pool())
        .await
        .unwrap();
}

#[tokio::test]
async fn a_bad_url_is_named_without_its_password() {
    let err = Store::open(
        "postgres://app:hunter2@127.0.0.1:1/none",
        Migrations::default(),
    )
    .await
    .unwrap_err();
    let message = err.to_string();
    assert!(
        message.contains("127.0.0.1:1") && !message.contains("hunter2"),
        "{message}"
    );
}

#[tokio::test]
async fn a_saved_checkpoint_only_moves_up_and_is_where_a_consumer_resumes() {
    each_backend(|store| async move {
        let resume = hookbus_store::resume_point(store.pool().clone(), "c".into());
        assert_eq!(resume().await, None, "nothing recorded");
        let mut tx = store.begin().await.unwrap();
        for (id, seq) in [("a", 3), ("b", 9)] {
            claim(&mut tx, "c", id, seq).await.unwrap();
        }
        tx.commit().await.unwrap();
        assert_eq!(
            resume().await,
            Some(9),
            "the ledger's highest, without a checkpoint"
        );
        let save = hookbus_store::checkpointer(store.pool().clone(), "c".into());
        save(4).await;
        assert_eq!(resume().await, Some(4), "the saved ack floor comes first");
        save(2).await;
        assert_eq!(
            hookbus_store::checkpoint(store.pool(), "c").await.unwrap(),
            Some(4),
            "an older floor does not replace a newer one"
        );
        save(7).await;
        assert_eq!(resume().await, Some(7));
        assert_eq!(
            hookbus_store::checkpoint(store.pool(), "other")
                .await
                .unwrap(),
            None
        );
    })
    .await;
}

#[tokio::test]
async fn a_batch_is_claimed_in_one_statement_once_per_event() {
    each_backend(|store| async move {
        let mut tx = store.begin().await.unwrap();
        assert!(claim(&mut tx, "c", "before", 1).await.unwrap());
        tx.commit().await.unwrap();

        let mut tx = store.begin().await.unwrap();
        let claimed =
            hookbus_store::claim_all(&mut tx, "c", &[("before", 1), ("x", 2), ("y", 3), ("x", 4)])
                .await
                .unwrap();
        tx.commit().await.unwrap();
        let mut claimed: Vec<_> = claimed.into_iter().collect();
        claimed.sort();
        assert_eq!(
            claimed,
            ["x", "y"],
            "new ids once, the one claimed before not"
        );
        assert_eq!(last_sequence(store.pool(), "c").await.unwrap(), Some(3));

        let mut tx = store.begin().await.unwrap();
        let again = hookbus_store::claim_all(&mut tx, "c", &[("x", 2), ("y", 3)])
            .await
            .unwrap();
        assert!(again.is_empty(), "a batch delivered again claims nothing");
        tx.rollback().await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn a_failing_batch_is_split_until_only_the_failing_item_fails() {
    each_backend(|store| async move {
        sqlx::query("CREATE TABLE positive (v BIGINT NOT NULL CHECK (v >= 0))")
            .execute(store.pool())
            .await
            .unwrap();
        // One statement for the whole batch: -1 fails it, and every half that holds -1.
        let items: Vec<i64> = vec![1, 2, 3, 4, -1, 6, 7, 8, 9, 10, 11];
        let params = hookbus_store::batch::Params::of(store.backend());
        let results: Vec<Result<i64, hookbus_store::StoreError>> =
            hookbus_store::apply_split(&store, &items, |tx, items| {
                Box::pin(async move {
                    let sql = format!(
                        "INSERT INTO positive (v) VALUES {}",
                        params.rows(items.len(), 1, 1)
                    );
                    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
                    for v in items {
                        query = query.bind(*v);
                    }
                    query
                        .execute(&mut **tx)
                        .await
                        .map_err(hookbus_store::StoreError::from)?;
                    Ok(items.to_vec())
                })
            })
            .await;
        for (item, result) in items.iter().zip(&results) {
            match result {
                Ok(v) => assert_eq!(v, item),
                Err(e) => assert_eq!(*item, -1, "only -1 fails, not {item}: {e}"),
            }
        }
        assert!(results[4].is_err());
        let (count, sum): (i64, i64) =
            sqlx::query_as("SELECT CAST(COUNT(*) AS BIGINT), CAST(SUM(v) AS BIGINT) FROM positive")
                .fetch_one(store.pool())
                .await
                .unwrap();
        assert_eq!((count, sum), (10, 61), "every other item once");
    })
    .await;
}
