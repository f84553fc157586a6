use funnel_domain::{CandidateId, ContactDetails};
use funnel_privacy::{KeyStore, Opened, PrivacyError};

fn contact() -> ContactDetails {
    ContactDetails {
        name: "Jan Novák".to_owned(),
        phone: Some("+420 777 000 111".to_owned()),
        email: Some("jan@example.cz".to_owned()),
        notes: Some("prefers evenings".to_owned()),
    }
}

#[tokio::test]
async fn sealed_data_opens_until_the_key_is_erased() {
    let db = funnel_testkit::test_database().await;
    let keys = KeyStore::new(db.pool.clone());
    let candidate = CandidateId::new();

    let sealed = keys.seal(candidate, &contact()).await.unwrap();
    let again = keys.seal(candidate, &contact()).await.unwrap();
    assert_eq!(
        keys.open(candidate, &sealed).await.unwrap(),
        Opened::Contact(contact())
    );
    assert_eq!(
        keys.open(candidate, &again).await.unwrap(),
        Opened::Contact(contact()),
        "a second seal reuses the candidate's key"
    );

    assert!(keys.erase(candidate).await.unwrap());
    assert!(
        !keys.erase(candidate).await.unwrap(),
        "second erase is a no-op"
    );
    assert!(keys.is_erased(candidate).await.unwrap());
    assert_eq!(keys.open(candidate, &sealed).await.unwrap(), Opened::Erased);
    assert!(matches!(
        keys.seal(candidate, &contact()).await,
        Err(PrivacyError::Erased)
    ));

    let stored: Option<Vec<u8>> =
        sqlx::query_scalar("SELECT data_key FROM candidate_keys WHERE candidate_id = $1")
            .bind(candidate.as_uuid())
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert!(stored.is_none(), "the key itself is gone from the database");
}

#[tokio::test]
async fn concurrent_first_seals_agree_on_one_key() {
    let db = funnel_testkit::test_database().await;
    let keys = KeyStore::new(db.pool.clone());
    let candidate = CandidateId::new();
    let seals = seal_concurrently(&keys, candidate).await;
    for sealed in seals {
        assert_eq!(
            keys.open(candidate, &sealed).await.unwrap(),
            Opened::Contact(contact())
        );
    }
}

async fn seal_concurrently(
    keys: &KeyStore,
    candidate: CandidateId,
) -> Vec<funnel_domain::SealedContact> {
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let keys = keys.clone();
            tokio::spawn(async move { keys.seal(candidate, &contact()).await.unwrap() })
        })
        .collect();
    let mut out = Vec::new();
    for task in tasks {
        out.push(task.await.unwrap());
    }
    out
}

#[tokio::test]
async fn erasing_an_unknown_candidate_blocks_later_seals() {
    let db = funnel_testkit::test_database().await;
    let keys = KeyStore::new(db.pool.clone());
    let candidate = CandidateId::new();
    assert!(keys.erase(candidate).await.unwrap());
    assert!(matches!(
        keys.seal(candidate, &contact()).await,
        Err(PrivacyError::Erased)
    ));
}
