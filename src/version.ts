// The version printed by `meshd version` and served by /v1/agent/self, from package.json.
import pkg from '../package.json' with { type: 'json' };

export const VERSION: string = pkg.version;
