// Worker-thread entry: registers tsx so the TypeScript vCPU loop can be
// imported when splitvm runs from its sources.
import { register } from 'tsx/esm/api';

register();
await import('./worker.ts');
