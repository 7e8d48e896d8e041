//! End to end: the rest of the client commands a TeamTalk client uses,
//! each through a msg_server to db_proxy or route_server and back.

mod common;

use common::*;
use teamtalk_proto::pb::im::base_define::ClientType;
use teamtalk_proto::pb::im::buddy::{
    ImAllUserReq, ImChangeSignInfoReq, ImDepartmentReq, ImRecentContactSessionReq,
    ImRemoveSessionReq, ImUsersInfoReq, ImUsersStatReq,
};
use teamtalk_proto::pb::im::login::{
    ImDeviceTokenReq, ImLogoutReq, ImPushShieldReq, ImQueryPushShieldReq,
};
use teamtalk_proto::pb::im::message::{ImClientTimeReq, ImGetLatestMsgIdReq, ImGetMsgByIdReq};
use teamtalk_proto::pb::im::switch_service::Imp2pCmdMsg;
use teamtalk_proto::{Command, Message};

macro_rules! ask {
    ($client:expr, $req:ident, $msg:expr, $rsp:ident) => {{
        match $client
            .request(Command::$req, &$msg, Command::$rsp, T)
            .expect(stringify!($req))
        {
            Message::$rsp(r) => r,
            other => panic!("{other:?}"),
        }
    }};
}

#[test]
fn directory_sessions_status_sign_info_p2p_push_settings_and_logout() {
    let w = world();
    let (alice_id, bob_id) = (w.user_id("alice"), w.user_id("bob"));
    w.sys.store().add_department("sales", 1, 0).expect("dept");
    let mut alice = w.login(0, "alice", ClientType::Windows);
    let mut bob = w.login(1, "bob", ClientType::Windows);

    // Directory: all users, then nothing changed after the newest we got
    // (a time equal to it is answered again: changes within that second
    // must not be missed).
    let all = ask!(
        alice,
        BuddyListAllUserRequest,
        ImAllUserReq {
            user_id: 0,
            latest_update_time: 0,
            attach_data: None
        },
        BuddyListAllUserResponse
    );
    let names: Vec<&str> = all
        .user_list
        .iter()
        .map(|u| u.user_real_name.as_str())
        .collect();
    assert_eq!(names, ["alice", "bob", "carol"]);
    let again = ask!(
        alice,
        BuddyListAllUserRequest,
        ImAllUserReq {
            user_id: 0,
            latest_update_time: all.latest_update_time + 1,
            attach_data: None
        },
        BuddyListAllUserResponse
    );
    assert!(again.user_list.is_empty(), "incremental: nothing changed");
    let info = ask!(
        alice,
        BuddyListUserInfoRequest,
        ImUsersInfoReq {
            user_id: 0,
            user_id_list: vec![bob_id],
            attach_data: None
        },
        BuddyListUserInfoResponse
    );
    assert_eq!(info.user_info_list[0].user_nick_name, "BOB");
    let depts = ask!(
        alice,
        BuddyListDepartmentRequest,
        ImDepartmentReq {
            user_id: 0,
            latest_update_time: 0,
            attach_data: None
        },
        BuddyListDepartmentResponse
    );
    assert_eq!(
        depts
            .dept_list
            .iter()
            .map(|d| d.dept_name.as_str())
            .collect::<Vec<_>>(),
        ["sales"]
    );

    // Presence: both PC users are online; carol is not.
    let stat = ask!(
        alice,
        BuddyListUsersStatusRequest,
        ImUsersStatReq {
            user_id: 0,
            user_id_list: vec![bob_id, w.user_id("carol")],
            attach_data: None
        },
        BuddyListUsersStatusResponse
    );
    let online: Vec<(u32, i32)> = stat
        .user_stat_list
        .iter()
        .map(|s| (s.user_id, s.status))
        .collect();
    assert_eq!(online, [(bob_id, 1), (w.user_id("carol"), 2)]);

    // Client time.
    let time = ask!(alice, MsgTimeRequest, ImClientTimeReq {}, MsgTimeResponse);
    assert!(time.server_time > 1_700_000_000);

    // A conversation, then its sessions, latest id and messages by id.
    let first = send(&mut alice, bob_id, "one");
    let second = send(&mut alice, bob_id, "two");
    let latest = ask!(
        bob,
        MsgGetLatestMsgIdReq,
        ImGetLatestMsgIdReq {
            user_id: 0,
            session_type: 1,
            session_id: alice_id,
            attach_data: None
        },
        MsgGetLatestMsgIdRsp
    );
    assert_eq!(latest.latest_msg_id, second);
    let by_id = ask!(
        bob,
        MsgGetByMsgIdReq,
        ImGetMsgByIdReq {
            user_id: 0,
            session_type: 1,
            session_id: alice_id,
            msg_id_list: vec![first],
            attach_data: None
        },
        MsgGetByMsgIdRes
    );
    assert_eq!(
        by_id.msg_list.iter().map(|m| m.msg_id).collect::<Vec<_>>(),
        [first]
    );
    let recent = ask!(
        bob,
        BuddyListRecentContactSessionRequest,
        ImRecentContactSessionReq {
            user_id: 0,
            latest_update_time: 0,
            attach_data: None
        },
        BuddyListRecentContactSessionResponse
    );
    assert_eq!(recent.contact_session_list.len(), 1);
    assert_eq!(
        (
            recent.contact_session_list[0].session_id,
            recent.contact_session_list[0].latest_msg_id
        ),
        (alice_id, second)
    );

    // Removing a session tells the user's other devices.
    let mut bob_phone = w.login(0, "bob", ClientType::Android);
    let removed = ask!(
        bob,
        BuddyListRemoveSessionReq,
        ImRemoveSessionReq {
            user_id: 0,
            session_type: 1,
            session_id: alice_id,
            attach_data: None
        },
        BuddyListRemoveSessionRes
    );
    assert_eq!(removed.result_code, 0);
    let Message::BuddyListRemoveSessionNotify(n) = bob_phone
        .wait_command(Command::BuddyListRemoveSessionNotify, T)
        .unwrap()
    else {
        panic!()
    };
    assert_eq!((n.user_id, n.session_id), (bob_id, alice_id));
    let recent = ask!(
        bob,
        BuddyListRecentContactSessionRequest,
        ImRecentContactSessionReq {
            user_id: 0,
            latest_update_time: 0,
            attach_data: None
        },
        BuddyListRecentContactSessionResponse
    );
    assert!(recent.contact_session_list.is_empty());

    // Sign info: the changer's reply, and a notice to every client, across msg_servers.
    let changed = ask!(
        alice,
        BuddyListChangeSignInfoRequest,
        ImChangeSignInfoReq {
            user_id: 0,
            sign_info: "busy".into(),
            attach_data: None
        },
        BuddyListChangeSignInfoResponse
    );
    assert_eq!(changed.result_code, 0);
    for c in [&mut bob, &mut alice] {
        let Message::BuddyListSignInfoChangedNotify(n) = c
            .wait_command(Command::BuddyListSignInfoChangedNotify, T)
            .unwrap()
        else {
            panic!()
        };
        assert_eq!(
            (n.changed_user_id, n.sign_info.as_str()),
            (alice_id, "busy")
        );
    }

    // P2P commands are relayed, not stored, with the sender's identity.
    alice
        .send(
            Command::SwitchP2pCmd,
            &Imp2pCmdMsg {
                from_user_id: 999,
                to_user_id: bob_id,
                cmd_msg_data: "typing".into(),
            },
        )
        .unwrap();
    let Message::SwitchP2pCmd(p) = bob.wait_command(Command::SwitchP2pCmd, T).unwrap() else {
        panic!()
    };
    assert_eq!(
        (p.from_user_id, p.cmd_msg_data.as_str()),
        (alice_id, "typing")
    );

    // Push settings and the device token, stored by db_proxy.
    let set = ask!(
        bob_phone,
        LoginReqPushShield,
        ImPushShieldReq {
            user_id: 0,
            shield_status: 1,
            attach_data: None
        },
        LoginResPushShield
    );
    assert_eq!(set.result_code, 0);
    let got = ask!(
        bob_phone,
        LoginReqQueryPushShield,
        ImQueryPushShieldReq {
            user_id: 0,
            attach_data: None
        },
        LoginResQueryPushShield
    );
    assert_eq!(got.shield_status, Some(1));
    let token = ask!(
        bob_phone,
        LoginReqDevicetoken,
        ImDeviceTokenReq {
            user_id: 0,
            device_token: "tok-1".into(),
            client_type: Some(ClientType::Android as i32),
            invalid_token: None,
            attach_data: None
        },
        LoginResDevicetoken
    );
    assert_eq!(token.user_id, bob_id);
    let stored = w.sys.store().device_tokens(&[bob_id]).unwrap();
    assert_eq!(stored.len(), 1);

    // Logout: the reply, then the server closes.
    let bye = ask!(alice, LoginReqLoginout, ImLogoutReq {}, LoginResLoginout);
    assert_eq!(bye.result_code, 0);
    assert!(closed(&mut alice));
}
