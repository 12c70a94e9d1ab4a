"""initial registry schema

Revision ID: 0001
Revises: (none)
Create Date: 2026-11-23 15:10:05.317049
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('access_tokens',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('hash', sa.String(length=64), nullable=False),
    sa.Column('user', sa.String(length=256), nullable=False),
    sa.Column('superuser', sa.Boolean(), nullable=False),
    sa.Column('scopes', sa.JSON(), nullable=True),
    sa.Column('description', sa.Text(), nullable=False),
    sa.Column('created', sa.DateTime(timezone=True), nullable=False),
    sa.Column('expires', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_access_tokens'))
    )
    with op.batch_alter_table('access_tokens', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_access_tokens_user'), ['user'], unique=False)

    op.create_table('applications',
    sa.Column('name', sa.String(length=63), nullable=False),
    sa.Column('uid', sa.String(length=36), nullable=False),
    sa.Column('labels', sa.JSON(), nullable=False),
    sa.Column('annotations', sa.JSON(), nullable=False),
    sa.Column('spec', sa.JSON(), nullable=False),
    sa.Column('status', sa.JSON(), nullable=False),
    sa.Column('resource_version', sa.String(length=36), nullable=False),
    sa.Column('generation', sa.Integer(), nullable=False),
    sa.Column('created', sa.DateTime(timezone=True), nullable=False),
    sa.Column('disabled', sa.Boolean(), nullable=False),
    sa.PrimaryKeyConstraint('name', name=op.f('pk_applications')),
    sa.UniqueConstraint('uid', name=op.f('uq_applications_uid'))
    )
    op.create_table('devices',
    sa.Column('application', sa.String(length=63), nullable=False),
    sa.Column('name', sa.String(length=256), nullable=False),
    sa.Column('uid', sa.String(length=36), nullable=False),
    sa.Column('labels', sa.JSON(), nullable=False),
    sa.Column('annotations', sa.JSON(), nullable=False),
    sa.Column('spec', sa.JSON(), nullable=False),
    sa.Column('status', sa.JSON(), nullable=False),
    sa.Column('resource_version', sa.String(length=36), nullable=False),
    sa.Column('generation', sa.Integer(), nullable=False),
    sa.Column('created', sa.DateTime(timezone=True), nullable=False),
    sa.Column('disabled', sa.Boolean(), nullable=False),
    sa.ForeignKeyConstraint(['application'], ['applications.name'], name=op.f('fk_devices_application_applications'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('application', 'name', name=op.f('pk_devices')),
    sa.UniqueConstraint('uid', name=op.f('uq_devices_uid'))
    )
    op.create_table('members',
    sa.Column('application', sa.String(length=63), nullable=False),
    sa.Column('user', sa.String(length=256), nullable=False),
    sa.Column('role', sa.String(length=16), nullable=False),
    sa.ForeignKeyConstraint(['application'], ['applications.name'], name=op.f('fk_members_application_applications'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('application', 'user', name=op.f('pk_members'))
    )
    with op.batch_alter_table('members', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_members_user'), ['user'], unique=False)

    op.create_table('credentials',
    sa.Column('application', sa.String(length=63), nullable=False),
    sa.Column('device', sa.String(length=256), nullable=False),
    sa.Column('position', sa.Integer(), nullable=False),
    sa.Column('kind', sa.String(length=8), nullable=False),
    sa.Column('username', sa.String(length=256), nullable=True),
    sa.Column('unique_username', sa.String(length=256), nullable=True),
    sa.Column('secret', sa.Text(), nullable=False),
    sa.ForeignKeyConstraint(['application', 'device'], ['devices.application', 'devices.name'], name=op.f('fk_credentials_application_devices'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('application', 'device', 'position', name=op.f('pk_credentials')),
    sa.UniqueConstraint('application', 'unique_username', name='uq_credentials_unique_username')
    )
    with op.batch_alter_table('credentials', schema=None) as batch_op:
        batch_op.create_index('ix_credentials_username', ['application', 'username'], unique=False)

    op.create_table('device_aliases',
    sa.Column('application', sa.String(length=63), nullable=False),
    sa.Column('alias', sa.String(length=256), nullable=False),
    sa.Column('device', sa.String(length=256), nullable=False),
    sa.ForeignKeyConstraint(['application', 'device'], ['devices.application', 'devices.name'], name=op.f('fk_device_aliases_application_devices'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('application', 'alias', name=op.f('pk_device_aliases'))
    )


def downgrade() -> None:
    op.drop_table('device_aliases')
    with op.batch_alter_table('credentials', schema=None) as batch_op:
        batch_op.drop_index('ix_credentials_username')

    op.drop_table('credentials')
    with op.batch_alter_table('members', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_members_user'))

    op.drop_table('members')
    op.drop_table('devices')
    op.drop_table('applications')
    with op.batch_alter_table('access_tokens', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_access_tokens_user'))

    op.drop_table('access_tokens')
