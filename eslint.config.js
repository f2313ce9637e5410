// Lint configuration. Besides the usual TypeScript rules it enforces the
// layer boundaries of docs/architecture.md: the core is pure, only
// src/platform touches Node, and no layer imports the composition root.
import js from "@eslint/js"
import { builtinModules } from "node:module"
import tseslint from "typescript-eslint"

const nodeBuiltins = ["node:*", ...builtinModules, ...builtinModules.map((name) => `${name}/*`)]

const onlyPlatform = "only src/platform may use Node built-ins and @effect/platform-node (docs/architecture.md)"
const pureCore =
  "src/core is pure: no I/O, no Effect runtime, no clock or randomness of its own; take time and randomness as arguments (docs/architecture.md)"

/** `effect` modules that run effects or hold mutable runtime state: not for the pure core. */
const effectRuntimeModules = [
  "Effect", "Layer", "Clock", "Random", "Fiber", "FiberRef", "FiberSet", "FiberMap", "Stream", "Sink", "Channel",
  "Queue", "PubSub", "Ref", "SynchronizedRef", "SubscriptionRef", "Deferred", "Scope", "Runtime", "ManagedRuntime",
  "Schedule", "Console", "Context", "Logger", "Metric", "Tracer", "STM", "TRef", "Pool", "Cache", "Config",
  "TestClock", "TestServices", "Mailbox", "RcMap", "RcRef"
]

const restrictedEffectPlatform = { group: ["@effect/platform-node", "@effect/platform-node/*", "@effect/platform-node-shared", "@effect/platform-node-shared/*"], message: onlyPlatform }

export default tseslint.config(
  { ignores: ["dist/", "node_modules/", "coverage/", ".plan/", ".tmp*/"] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    rules: {
      "@typescript-eslint/no-explicit-any": "error",
      "@typescript-eslint/no-non-null-assertion": "error",
      "@typescript-eslint/no-unused-vars": ["error", { argsIgnorePattern: "^_", varsIgnorePattern: "^_" }],
      "@typescript-eslint/consistent-type-imports": ["error", { fixStyle: "inline-type-imports" }],
      // Effect's generators use `yield*` on values that TypeScript already checks.
      "require-yield": "off"
    }
  },
  {
    files: ["src/core/**/*.ts"],
    rules: {
      "no-restricted-imports": ["error", {
        paths: [{ name: "effect", importNames: effectRuntimeModules, message: pureCore }],
        patterns: [
          { group: nodeBuiltins, message: pureCore },
          { group: ["@effect/*", "effect/*"], message: `${pureCore}; import pure data modules from "effect"` },
          { group: ["../*", "../**"], message: "src/core imports nothing outside src/core" }
        ]
      }],
      "no-restricted-globals": ["error",
        ...["process", "console", "setTimeout", "setInterval", "setImmediate", "queueMicrotask", "fetch", "performance", "Buffer", "require", "crypto"]
          .map((name) => ({ name, message: pureCore }))
      ],
      "no-restricted-syntax": ["error",
        { selector: "MemberExpression[object.name='Date'][property.name='now']", message: pureCore },
        { selector: "NewExpression[callee.name='Date'][arguments.length=0]", message: pureCore },
        { selector: "MemberExpression[object.name='Math'][property.name='random']", message: pureCore }
      ]
    }
  },
  {
    files: ["src/node/**/*.ts"],
    rules: {
      "no-restricted-imports": ["error", {
        patterns: [
          { group: nodeBuiltins, message: onlyPlatform },
          restrictedEffectPlatform,
          { group: ["../platform/*", "../chat/*", "../cli/*"], message: "src/node depends only on src/core (docs/architecture.md)" }
        ]
      }]
    }
  },
  {
    files: ["src/chat/**/*.ts"],
    rules: {
      "no-restricted-imports": ["error", {
        patterns: [
          { group: nodeBuiltins, message: onlyPlatform },
          restrictedEffectPlatform,
          { group: ["../platform/*", "../cli/*"], message: "src/chat depends only on src/core and src/node (docs/architecture.md)" }
        ]
      }]
    }
  },
  {
    files: ["src/platform/**/*.ts"],
    rules: {
      "no-restricted-imports": ["error", {
        patterns: [{ group: ["../cli/*"], message: "only src/cli composes the program (docs/architecture.md)" }]
      }]
    }
  }
)
