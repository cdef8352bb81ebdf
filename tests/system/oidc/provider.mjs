// The OpenID provider of the single sign-on tests (tests/system/test_9_sso.py):
// npm's oidc-provider (OpenID certified), configured here and nothing else. Its
// development login form ("devInteractions") takes any password: the tests are
// about the hub's side of the flow, not the provider's passwords.
//
//   node provider.mjs PORT CONFIG.json
//
// CONFIG.json: {"issuer": ..., "client_id": ..., "client_secret": ..., "redirect_uris": [...], "other_clients": [...]}.
// Accounts: alice (a local account of the test machine), in the groups "lab" and
// "lab-admins"; quentin, in "lab", whom the machine does not know; and the others below.
import { readFileSync } from "node:fs";
import { dirname } from "node:path";
import Provider from "oidc-provider";

const [port, configFile] = process.argv.slice(2);
const conf = JSON.parse(readFileSync(configFile, "utf8"));

// Sessions (test_9_sso_sessions.py): a person is disabled at runtime by naming them,
// one a line, in the file "disabled" beside CONFIG.json, read at every lookup. A
// disabled person is an unknown account to oidc-provider: userinfo refuses their
// access token (401 invalid_token), the token endpoint their refresh token (400
// invalid_grant), and the login form does not let them through.
const DISABLED = `${dirname(configFile)}/disabled`;
const disabled = (id) => {
  try { return readFileSync(DISABLED, "utf8").split("\n").includes(id); } catch { return false; }
};

const ACCOUNTS = {
  alice: { preferred_username: "alice", name: "Alice Liddell", email: "alice@example.org", groups: ["lab", "lab-admins"] },
  quentin: { preferred_username: "quentin", name: "Quentin Unknown", email: "quentin@example.org", groups: ["lab"] },
  // accounts = "create" (test_9_sso_accounts.py): rosa has no account yet; mallory's name is root.
  rosa: { preferred_username: "rosa", name: "Rosa Created", email: "rosa@example.org", groups: ["lab", "gpu"] },
  mallory: { preferred_username: "root", name: "Mallory", email: "mallory@example.org", groups: ["lab"] },
  // [oidc] claims_from = "id_token" (test_9_sso.py): like Entra ID, ida's groups are
  // in her ID token only; her userinfo has none.
  ida: { preferred_username: "ida", name: "Ida Token", email: "ida@example.org", groups: ["lab"], idTokenGroupsOnly: true },
  // Entra ID's shape (test_9_sso_id_token.py): the user name is a UPN, and it and the
  // groups are in the ID token only. ivan's UPN has ines's name in another domain.
  ines: { preferred_username: "ines@example.org", name: "Ines Entra", email: "ines@example.org", groups: ["lab", "lab-admins"], entra: true },
  ivan: { preferred_username: "ines@evil.example", name: "Ivan Other", email: "ines@evil.example", groups: ["lab"], entra: true },
};

const provider = new Provider(conf.issuer, {
  clients: [{
    client_id: conf.client_id,
    client_secret: conf.client_secret,
    redirect_uris: conf.redirect_uris,
    grant_types: ["authorization_code", "refresh_token"],  // sessions: refresh tokens
    response_types: ["code"],
    token_endpoint_auth_method: "client_secret_post",
  }, ...(conf.other_clients ?? [])], // other_clients: whole client entries (a code issued to another client)
  claims: {
    openid: ["sub"],
    profile: ["preferred_username", "name"],
    email: ["email"],
    groups: ["groups"],
  },
  scopes: ["openid", "profile", "email", "groups"],
  async findAccount(ctx, id) {
    const account = ACCOUNTS[id];
    if (!account || disabled(id)) return undefined;
    const { idTokenGroupsOnly, entra, ...claims } = account;
    return {
      accountId: id,
      async claims(use) {
        if (entra && use === "userinfo") return { sub: id, name: claims.name, email: claims.email };
        return idTokenGroupsOnly && use === "userinfo" ? { sub: id, ...claims, groups: [] } : { sub: id, ...claims };
      },
    };
  },
  features: { devInteractions: { enabled: true } },
  // The ID token carries the scopes' claims too (oidc-provider leaves them to userinfo
  // by default when there is an access token), as Entra ID's and Keycloak's do.
  conformIdTokenClaims: false,
  // Sessions: a refresh token with every code, without the offline_access scope
  // (oidc-provider's default asks for it); access tokens short enough
  // (conf.access_token_ttl s, default an hour) that a test sees the hub refresh them.
  issueRefreshToken: async (ctx, client) => client.grantTypeAllowed("refresh_token"),
  ttl: { AccessToken: conf.access_token_ttl || 3600 },
  pkce: { required: () => true },
  cookies: { keys: ["appliance-test-provider-cookie-key"] },
  // A consent screen asks nothing the tests need: every scope of the client is granted.
  async loadExistingGrant(ctx) {
    const grant = new ctx.oidc.provider.Grant({ clientId: ctx.oidc.client.clientId, accountId: ctx.oidc.session.accountId });
    grant.addOIDCScope("openid profile email groups");
    await grant.save();
    return grant;
  },
});

provider.listen(Number(port), "127.0.0.1", () => {
  console.log(`oidc-provider listening on 127.0.0.1:${port}, issuer ${conf.issuer}`);
});
