"""Wire constants of the ZooKeeper client protocol (see shared/zk-protocol.md).

Plain int class attributes rather than IntEnum: these are compared on the request path, and an
IntEnum member costs an attribute lookup plus a Python-level __eq__ each time.
"""


class Op:
    NOTIFICATION = 0
    CREATE = 1
    DELETE = 2
    EXISTS = 3
    GET_DATA = 4
    SET_DATA = 5
    GET_ACL = 6
    SET_ACL = 7
    GET_CHILDREN = 8
    SYNC = 9
    PING = 11
    GET_CHILDREN2 = 12
    CHECK = 13
    MULTI = 14
    CREATE2 = 15
    RECONFIG = 16
    CHECK_WATCHES = 17
    REMOVE_WATCHES = 18
    CREATE_CONTAINER = 19
    DELETE_CONTAINER = 20
    CREATE_TTL = 21
    MULTI_READ = 22
    AUTH = 100
    SET_WATCHES = 101
    SASL = 102
    GET_EPHEMERALS = 103
    GET_ALL_CHILDREN_NUMBER = 104
    SET_WATCHES2 = 105
    ADD_WATCH = 106
    WHO_AM_I = 107
    CREATE_SESSION = -10
    CLOSE_SESSION = -11
    ERROR = -1


CREATE_OPS = frozenset({Op.CREATE, Op.CREATE2, Op.CREATE_CONTAINER, Op.CREATE_TTL})
WRITE_OPS = frozenset(
    {
        Op.CREATE, Op.CREATE2, Op.CREATE_CONTAINER, Op.CREATE_TTL, Op.DELETE, Op.SET_DATA,
        Op.SET_ACL, Op.MULTI, Op.RECONFIG, Op.CLOSE_SESSION, Op.DELETE_CONTAINER,
    }
)
READ_OPS = frozenset(
    {
        Op.EXISTS, Op.GET_DATA, Op.GET_ACL, Op.GET_CHILDREN, Op.GET_CHILDREN2,
        Op.GET_ALL_CHILDREN_NUMBER, Op.GET_EPHEMERALS, Op.MULTI_READ, Op.WHO_AM_I, Op.SYNC,
    }
)  # answered from the tree in connection order (sync is a no-op barrier on one server)


class Err:
    OK = 0
    SYSTEM_ERROR = -1
    RUNTIME_INCONSISTENCY = -2
    DATA_INCONSISTENCY = -3
    CONNECTION_LOSS = -4
    MARSHALLING_ERROR = -5
    UNIMPLEMENTED = -6
    OPERATION_TIMEOUT = -7
    BAD_ARGUMENTS = -8
    UNKNOWN_SESSION = -12
    NEW_CONFIG_NO_QUORUM = -13
    RECONFIG_IN_PROGRESS = -14
    API_ERROR = -100
    NO_NODE = -101
    NO_AUTH = -102
    BAD_VERSION = -103
    NO_CHILDREN_FOR_EPHEMERALS = -108
    NODE_EXISTS = -110
    NOT_EMPTY = -111
    SESSION_EXPIRED = -112
    INVALID_CALLBACK = -113
    INVALID_ACL = -114
    AUTH_FAILED = -115
    SESSION_MOVED = -118
    NOT_READONLY = -119
    EPHEMERAL_ON_LOCAL_SESSION = -120
    NO_WATCHER = -121
    RECONFIG_DISABLED = -123
    SESSION_CLOSED_REQUIRE_SASL_AUTH = -124  # enforce.auth: the connection must authenticate


class Xid:
    NOTIFICATION = -1
    PING = -2
    AUTH = -4
    SET_WATCHES = -8


class CreateMode:
    PERSISTENT = 0
    EPHEMERAL = 1
    PERSISTENT_SEQUENTIAL = 2
    EPHEMERAL_SEQUENTIAL = 3
    CONTAINER = 4
    PERSISTENT_WITH_TTL = 5
    PERSISTENT_SEQUENTIAL_WITH_TTL = 6

    EPHEMERAL_MODES = frozenset({1, 3})
    SEQUENTIAL_MODES = frozenset({2, 3, 6})
    TTL_MODES = frozenset({5, 6})


class Event:
    NODE_CREATED = 1
    NODE_DELETED = 2
    NODE_DATA_CHANGED = 3
    NODE_CHILDREN_CHANGED = 4


SYNC_CONNECTED = 3  # the only KeeperState a server ever puts in a notification


class Perm:
    READ = 1
    WRITE = 2
    CREATE = 4
    DELETE = 8
    ADMIN = 16
    ALL = 31


class WatcherType:
    CHILDREN = 1
    DATA = 2
    ANY = 3
    PERSISTENT = 4
    PERSISTENT_RECURSIVE = 5


class AddWatchMode:
    PERSISTENT = 0
    PERSISTENT_RECURSIVE = 1


# ephemeralOwner encodings ZooKeeper uses internally for node kinds (clients see 0 for these).
CONTAINER_OWNER = -0x8000000000000000  # 0x8000000000000000 as a signed 64-bit value
TTL_OWNER_MASK = -0x0100000000000000  # 0xFF00000000000000 as a signed 64-bit value
MAX_TTL_MS = 0xFF_FFFF_FFFF

PROTECTED_PATHS = frozenset({"/", "/zookeeper", "/zookeeper/quota", "/zookeeper/config"})

OP_NAMES = {
    Op.CREATE: "create", Op.DELETE: "delete", Op.EXISTS: "exists", Op.GET_DATA: "getData",
    Op.SET_DATA: "setData", Op.GET_ACL: "getACL", Op.SET_ACL: "setACL",
    Op.GET_CHILDREN: "getChildren", Op.SYNC: "sync", Op.PING: "ping",
    Op.GET_CHILDREN2: "getChildren2", Op.CHECK: "check", Op.MULTI: "multi",
    Op.CREATE2: "create2", Op.RECONFIG: "reconfig", Op.CHECK_WATCHES: "checkWatches",
    Op.REMOVE_WATCHES: "removeWatches", Op.CREATE_CONTAINER: "createContainer",
    Op.DELETE_CONTAINER: "deleteContainer", Op.CREATE_TTL: "createTTL",
    Op.MULTI_READ: "multiRead", Op.AUTH: "auth", Op.SET_WATCHES: "setWatches", Op.SASL: "sasl",
    Op.GET_EPHEMERALS: "getEphemerals", Op.GET_ALL_CHILDREN_NUMBER: "getAllChildrenNumber",
    Op.SET_WATCHES2: "setWatches2", Op.ADD_WATCH: "addWatch", Op.WHO_AM_I: "whoAmI",
    Op.CREATE_SESSION: "createSession", Op.CLOSE_SESSION: "closeSession",
}
