export {
  createClient,
  CSRF_HEADER,
  type ClientEvent,
  type ClientOptions,
  type LoginOptions,
  type LogoutOptions,
  type LogoutResult,
  type PortcullisClient,
  type Session,
} from "./client.js";
export { attachAxios, type AxiosLikeConfig, type AxiosLikeError, type AxiosLikeInstance } from "./axios.js";
export { PortcullisError, PROBLEM_CSRF, PROBLEM_UNAUTHENTICATED, type Problem } from "./problem.js";
export {
  createVault,
  DATA_CLASSES,
  KEY_ID,
  KEYS_STORE,
  OWNER_ID,
  RECORDS_STORE,
  VAULT_DB_VERSION,
  VaultError,
  type DataClass,
  type OwnerRecord,
  type StoredRecord,
  type Vault,
  type VaultOptions,
} from "./vault.js";
export { BEARER_PATTERN, findTokenLike, JWT_PATTERN } from "./classify.js";
export {
  createTrustedTypesPolicy,
  TrustedTypesRefusal,
  type PortcullisPolicy,
  type SanitizerLike,
  type TrustedTypesPolicyOptions,
} from "./trusted-types.js";
