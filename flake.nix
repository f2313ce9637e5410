{
  description = "Peerchat: serverless peer-to-peer chat on a Kademlia DHT (dev shell)";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-24.11";

  outputs = { self, nixpkgs }:
    let
      systems = [ "x86_64-linux" "aarch64-linux" "x86_64-darwin" "aarch64-darwin" ];
      forAllSystems = f: nixpkgs.lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});
    in {
      devShells = forAllSystems (pkgs: {
        # Node 20 is the oldest line the project supports (package.json engines: >=20.19); it ships npm.
        default = pkgs.mkShell { packages = [ pkgs.nodejs_20 ]; };
      });
    };
}
