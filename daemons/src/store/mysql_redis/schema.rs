//! The tables [`super::MysqlStore`] reads and writes: TeamTalk's own (the
//! names, columns and `_0` .. `_7` shards its db_proxy uses, so a database
//! made by TeamTalk's setup works unchanged, and one made here works for the
//! C++ db_proxy), plus three tables of ours, prefixed `rs_`, that the C++
//! db_proxy never reads.
//!
//! Every statement is `CREATE TABLE IF NOT EXISTS`: an existing deployment's
//! tables are used as they are. Where ours differ from TeamTalk's setup it is
//! only in being wider or stricter where that cannot break the C++ code:
//! message bodies are `MEDIUMBLOB` (TeamTalk's `varchar(4096)` is its whole
//! limit on a message), user names are unique, and a conversation's message
//! ids are unique (a second row under one id would be a lost update, so it
//! is refused rather than stored).

/// How many shards TeamTalk splits message tables into (`id % 8`).
pub(super) const SHARDS: u32 = 8;

/// The DDL, in order.
pub(super) fn statements() -> Vec<String> {
    let mut out = vec![
        "CREATE TABLE IF NOT EXISTS IMDepart (
            id int unsigned NOT NULL AUTO_INCREMENT,
            departName varchar(255) NOT NULL DEFAULT '',
            priority int unsigned NOT NULL DEFAULT 0,
            parentId int unsigned NOT NULL DEFAULT 0,
            status int unsigned NOT NULL DEFAULT 0,
            created int unsigned NOT NULL DEFAULT 0,
            updated int unsigned NOT NULL DEFAULT 0,
            PRIMARY KEY (id),
            KEY idx_updated (updated)
        ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin"
            .to_owned(),
        // password/salt: TeamTalk's md5hex(md5hex(pw) + salt). Users made by
        // teamtalk-rs have '' there and an Argon2 hash in rs_user_password.
        "CREATE TABLE IF NOT EXISTS IMUser (
            id int unsigned NOT NULL AUTO_INCREMENT,
            sex tinyint unsigned NOT NULL DEFAULT 0,
            name varchar(255) NOT NULL DEFAULT '',
            domain varchar(255) NOT NULL DEFAULT '',
            nick varchar(255) NOT NULL DEFAULT '',
            password varchar(64) NOT NULL DEFAULT '',
            salt varchar(16) NOT NULL DEFAULT '',
            phone varchar(64) NOT NULL DEFAULT '',
            email varchar(255) NOT NULL DEFAULT '',
            avatar varchar(1024) DEFAULT '',
            departId int unsigned NOT NULL DEFAULT 0,
            status tinyint unsigned DEFAULT 0,
            created int unsigned NOT NULL DEFAULT 0,
            updated int unsigned NOT NULL DEFAULT 0,
            push_shield_status tinyint unsigned NOT NULL DEFAULT 0,
            sign_info varchar(1024) NOT NULL DEFAULT '',
            PRIMARY KEY (id),
            UNIQUE KEY uniq_name (name),
            KEY idx_updated (updated)
        ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin"
            .to_owned(),
        "CREATE TABLE IF NOT EXISTS IMRelationShip (
            id int unsigned NOT NULL AUTO_INCREMENT,
            smallId int unsigned NOT NULL,
            bigId int unsigned NOT NULL,
            status tinyint unsigned DEFAULT 0,
            created int unsigned NOT NULL DEFAULT 0,
            updated int unsigned NOT NULL DEFAULT 0,
            PRIMARY KEY (id),
            KEY idx_smallId_bigId_status (smallId, bigId, status)
        ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4"
            .to_owned(),
        "CREATE TABLE IF NOT EXISTS IMRecentSession (
            id int unsigned NOT NULL AUTO_INCREMENT,
            userId int unsigned NOT NULL,
            peerId int unsigned NOT NULL,
            type tinyint unsigned DEFAULT 0,
            status tinyint unsigned DEFAULT 0,
            created int unsigned NOT NULL DEFAULT 0,
            updated int unsigned NOT NULL DEFAULT 0,
            PRIMARY KEY (id),
            UNIQUE KEY uniq_userId_peerId_type (userId, peerId, type),
            KEY idx_userId_status_updated (userId, status, updated)
        ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4"
            .to_owned(),
        "CREATE TABLE IF NOT EXISTS IMGroup (
            id int unsigned NOT NULL AUTO_INCREMENT,
            name varchar(256) NOT NULL DEFAULT '',
            avatar varchar(1024) NOT NULL DEFAULT '',
            creator int unsigned NOT NULL DEFAULT 0,
            type tinyint unsigned NOT NULL DEFAULT 1,
            userCnt int unsigned NOT NULL DEFAULT 0,
            status tinyint unsigned NOT NULL DEFAULT 1,
            version int unsigned NOT NULL DEFAULT 1,
            lastChated int unsigned NOT NULL DEFAULT 0,
            updated int unsigned NOT NULL DEFAULT 0,
            created int unsigned NOT NULL DEFAULT 0,
            PRIMARY KEY (id),
            KEY idx_creator (creator)
        ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin"
            .to_owned(),
        "CREATE TABLE IF NOT EXISTS IMGroupMember (
            id int unsigned NOT NULL AUTO_INCREMENT,
            groupId int unsigned NOT NULL,
            userId int unsigned NOT NULL,
            status tinyint unsigned NOT NULL DEFAULT 1,
            created int unsigned NOT NULL DEFAULT 0,
            updated int unsigned NOT NULL DEFAULT 0,
            PRIMARY KEY (id),
            KEY idx_groupId_userId_status (groupId, userId, status),
            KEY idx_userId_status_updated (userId, status, updated)
        ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4"
            .to_owned(),
        "CREATE TABLE IF NOT EXISTS IMTransmitFile (
            id int unsigned NOT NULL AUTO_INCREMENT,
            fromId int unsigned NOT NULL,
            toId int unsigned NOT NULL,
            fileName varchar(1024) NOT NULL DEFAULT '',
            size int unsigned NOT NULL DEFAULT 0,
            taskId varchar(128) NOT NULL,
            status tinyint unsigned NOT NULL DEFAULT 0,
            created int unsigned NOT NULL DEFAULT 0,
            updated int unsigned NOT NULL DEFAULT 0,
            PRIMARY KEY (id),
            UNIQUE KEY uniq_taskId (taskId),
            KEY idx_toId_status (toId, status, id)
        ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4"
            .to_owned(),
        // Ours: Argon2 PHC strings of the users teamtalk-rs created.
        "CREATE TABLE IF NOT EXISTS rs_user_password (
            userId int unsigned NOT NULL,
            phc varchar(255) NOT NULL,
            PRIMARY KEY (userId)
        ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin"
            .to_owned(),
        // Ours: message idempotency keys (see `Store::store_message`).
        "CREATE TABLE IF NOT EXISTS rs_msg_dedupe (
            seq bigint unsigned NOT NULL AUTO_INCREMENT,
            sessionType tinyint unsigned NOT NULL,
            fromId int unsigned NOT NULL,
            toId int unsigned NOT NULL,
            dkey varbinary(64) NOT NULL,
            msgId int unsigned NOT NULL,
            created int unsigned NOT NULL,
            PRIMARY KEY (seq),
            UNIQUE KEY uniq_key (sessionType, fromId, toId, dkey),
            KEY idx_created (created)
        ) ENGINE=InnoDB"
            .to_owned(),
        // Ours: what a group member may see. joinedMsgId: the group's last
        // id when they joined (they read what comes after); hiddenMsgId: the
        // last id when they removed the group's session (shown again after
        // a newer one), NULL when shown. Rows TeamTalk wrote have none: such
        // members see the whole history, as TeamTalk's clients did.
        "CREATE TABLE IF NOT EXISTS rs_group_member (
            groupId int unsigned NOT NULL,
            userId int unsigned NOT NULL,
            joinedMsgId int unsigned NOT NULL DEFAULT 0,
            hiddenMsgId int unsigned NULL,
            PRIMARY KEY (groupId, userId)
        ) ENGINE=InnoDB"
            .to_owned(),
    ];
    for n in 0..SHARDS {
        out.push(format!(
            "CREATE TABLE IF NOT EXISTS IMMessage_{n} (
                id int unsigned NOT NULL AUTO_INCREMENT,
                relateId int unsigned NOT NULL,
                fromId int unsigned NOT NULL,
                toId int unsigned NOT NULL,
                msgId int unsigned NOT NULL,
                content mediumblob,
                type tinyint unsigned NOT NULL DEFAULT 1,
                status tinyint unsigned NOT NULL DEFAULT 0,
                updated int unsigned NOT NULL DEFAULT 0,
                created int unsigned NOT NULL DEFAULT 0,
                PRIMARY KEY (id),
                UNIQUE KEY uniq_relateId_msgId (relateId, msgId),
                KEY idx_relateId_status_msgId (relateId, status, msgId)
            ) ENGINE=InnoDB"
        ));
        out.push(format!(
            "CREATE TABLE IF NOT EXISTS IMGroupMessage_{n} (
                id int unsigned NOT NULL AUTO_INCREMENT,
                groupId int unsigned NOT NULL,
                userId int unsigned NOT NULL,
                msgId int unsigned NOT NULL,
                content mediumblob,
                type tinyint unsigned NOT NULL DEFAULT 2,
                status int unsigned NOT NULL DEFAULT 0,
                updated int unsigned NOT NULL DEFAULT 0,
                created int unsigned NOT NULL DEFAULT 0,
                PRIMARY KEY (id),
                UNIQUE KEY uniq_groupId_msgId (groupId, msgId),
                KEY idx_groupId_status_msgId (groupId, status, msgId)
            ) ENGINE=InnoDB"
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_teamtalk_table_is_created_once() {
        let ddl = super::statements();
        for table in [
            "IMDepart",
            "IMUser",
            "IMRelationShip",
            "IMRecentSession",
            "IMGroup",
            "IMGroupMember",
            "IMTransmitFile",
            "IMMessage_0",
            "IMMessage_7",
            "IMGroupMessage_0",
            "IMGroupMessage_7",
        ] {
            let n = ddl
                .iter()
                .filter(|s| s.contains(&format!("IF NOT EXISTS {table} (")))
                .count();
            assert_eq!(n, 1, "{table}");
        }
        assert_eq!(ddl.len(), 10 + 2 * 8);
    }
}
